"""Lint findings measured as a sliver each are counted together per code and file: cleanrl's
TD3 updates three target networks in three loops over parameters, 0.5% to 0.7% of the step
each, each told "measured, under 1% of the step", while together they took 1.0 ms of a 15 ms
step and torch._foreach_lerp_ did them in 0.10 ms."""

from __future__ import annotations

from torchdoctor.analyze.advice.lint_hot import lint_findings


def _body(line: int, ms: float, path: str = "/w/td3.py") -> dict:
    return {"file": path, "line": line, "loop_line": line - 1, "function": "<module>",
            "code": "target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)",
            "owner": "", "forward_ms": {"mean": ms}, "backward_ms": {"mean": 0.0},
            "total_ms": {"mean": ms}, "calls_per_step": 6.0, "torch_calls_per_step": 6.0,
            "top_ops": [{"op": "Tensor.copy_", "forward_ms": ms, "calls_per_step": 6.0}]}  # fmt: skip


def _loop(line: int, code: str = "TD305", path: str = "/w/td3.py") -> dict:
    return {"code": code, "severity": "warning", "path": path, "line": line,
            "message": "a loop over parameters; torch._foreach_lerp_(ema_params, params, w)",
            "replacement": None}  # fmt: skip


def _session(bodies: list[dict], findings: list[dict]) -> dict:
    return {"step_ms": {"mean": 100.0}, "hot_lines": {"steps": 5, "lines": bodies},
            "lint": findings}  # fmt: skip


def test_three_soft_update_loops_of_a_sliver_each_are_one_measured_suspect():
    findings = [_loop(29), _loop(31), _loop(33)]
    session = _session([_body(30, 0.6), _body(32, 0.5), _body(34, 0.4)], findings)
    (item,) = [a for a in lint_findings(session) if "TD305" in a.title]
    assert "on measured lines (td3.py:29, 31, 33)" in item.title and "not hot" not in item.title
    assert item.heat == 0.015  # (1.5 ms of a 100 ms step: their shares added up)
    assert any("its 3 findings' lines (30, 32, 34) take 1.5 ms per step together" in e
               for e in item.evidence)  # fmt: skip
    assert sorted(loc.rsplit(":", 1)[1] for loc in item.locations) == ["29", "31", "33"]
    # the saving is the cure's over the three loops' time (the EMA cure's 1.31x at least)
    assert item.estimated_saving_ms is not None
    assert item.estimated_saving_ms >= 1.5 * (1 - 1 / 1.31) - 1e-6


def test_slivers_that_stay_under_the_share_together_or_differ_stay_cold():
    # two loops of 0.3% each: 0.6% together, still negligible
    session = _session([_body(30, 0.3), _body(32, 0.3)], [_loop(29), _loop(31)])
    (cold,) = [a for a in lint_findings(session) if "TD305" in a.title]
    assert cold.heat == 0.0 and "(2 finding(s), not hot)" in cold.title
    # one loop alone is told as before: no group of one
    session = _session([_body(30, 0.6)], [_loop(29)])
    (alone,) = [a for a in lint_findings(session) if "TD305" in a.title]
    assert alone.heat == 0.0 and "measured, under 1% of the step" in " ".join(alone.evidence)
    # two files: no sum across them (each its own fix)
    other = "/w/ddpg.py"
    session = _session([_body(30, 0.6), _body(30, 0.6, other)], [_loop(29), _loop(29, path=other)])
    assert all(a.heat == 0.0 for a in lint_findings(session) if "TD305" in a.title)
