"""A measured line whose time is elementwise ops (mamba.py's `deltaA = torch.exp(delta.unsqueeze(-1)
* A)` on (B, L, ED, N) tensors) is told to fuse them with torch.compile, with the saving of the
suite 'fused' chain pair; one advice with the compile knob (the same remedy), not "look at this
line first ... wrap it in torchdoctor.region"."""

from reports_sessions import node, s, slow_session

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.chain_cure import FUSE_CHAIN


def _row(ops, function="selective_scan", line=284):
    total = sum(o.get("forward_ms", 0.0) + o.get("backward_ms", 0.0) for o in ops)
    return {
        "file": "/m/mamba.py", "line": line, "location": f"mamba.py:{line}",
        "function": function, "function_line": 274, "owner": "", "owner_kind": "root",
        "code": "deltaA = torch.exp(delta.unsqueeze(-1) * A)",
        "forward_ms": {"median": total / 2, "mean": total / 2},
        "backward_ms": {"median": total / 2, "mean": total / 2},
        "total_ms": {"median": total, "mean": total}, "calls_per_step": 1.0,
        "torch_calls_per_step": float(len(ops)), "top_ops": ops,
    }  # fmt: skip


CHAIN = [
    {"op": "Tensor.mul", "forward_ms": 5.0, "backward_ms": 8.0, "calls_per_step": 1.0},
    {"op": "torch.exp", "forward_ms": 6.0, "backward_ms": 5.0, "calls_per_step": 1.0},
    {"op": "Tensor.unsqueeze", "forward_ms": 0.01, "backward_ms": 0.0, "calls_per_step": 1.0},
]


def _session(row, stack=False, device="cuda:0 NVIDIA H100"):
    """A step of 100 ms whose root's own time holds the line (with ``stack``: a layer stack
    dominates the step, whose remedy is compiling too)."""
    if stack:
        session = slow_session()
        rest = next(c for c in session["tree"]["children"] if c["kind"] == "self")
        rest["forward_ms"] = {"median": 80.0, "mean": 80.0}
    else:
        root = node("", 60.0, 40.0, kind="root", children=[node("model", 10.0, 10.0)])
        root["total_ms"] = s(100.0)
        session = {"step_ms": s(100.0), "tree": root}
    session["hot_lines"] = {"steps": 5, "lines": [row]}
    session["environment"] = {**session.get("environment", {}), "device": device}
    return session


def _about_line(session, line=284):
    return [a for a in advise(session) if any(f"mamba.py:{line}" in loc for loc in a.locations)]


def test_an_elementwise_line_is_told_to_fuse_it_with_a_stated_saving():
    (item,) = _about_line(_session(_row(CHAIN)))
    assert FUSE_CHAIN.summary in item.title
    assert item.fix == FUSE_CHAIN.fix and item.estimated_saving_ms > 0
    assert "region" not in item.fix
    assert any("1.1x-1.78x" in e for e in item.evidence)


def test_on_a_cpu_the_fusion_states_no_saving_only_its_bound():
    """mamba.py on a CPU: `@torch.compile def selective_scan` as advised went 802 -> 973 ms a
    step, where 7.31 ms was stated saved with confidence high."""
    (item,) = _about_line(_session(_row(CHAIN), device="cpu"))
    assert FUSE_CHAIN.summary in item.title
    assert item.estimated_saving_ms is None and item.confidence == "low"
    assert item.saving_range_ms[0] == 0.0 < item.saving_range_ms[1]
    assert any("on a CPU its gain is uncertain" in e for e in item.evidence)


def test_the_snippet_is_the_lines_own_code_and_function():
    """The 'Code changes' snippet showed mamba's selective_scan on a conv net's relu line."""
    row = _row(CHAIN, function="forward")
    row["code"] = "x = F.relu(x) * scale + shift"
    (item,) = _about_line(_session(row))
    assert item.code.startswith("x = F.relu(x) * scale + shift   # before")
    assert "def forward(...)" in item.code and "selective_scan" not in item.code


def test_the_line_joins_the_other_compile_advice():
    """A dominant layer stack's "compile the layer stack" is the same remedy: one advice, with
    the line's measured share in its evidence."""
    session = _session(_row(CHAIN), stack=True)
    compiled = [a for a in advise(session) if a.cause == "torch.compile"]
    assert len(compiled) == 1
    assert any(loc.endswith("mamba.py:284") for loc in compiled[0].locations)


def test_a_script_top_level_line_or_a_matmul_gets_no_fusion():
    top = _row(CHAIN, function="<module>")
    assert FUSE_CHAIN.summary not in " ".join(a.title for a in advise(_session(top)))
    matmul = _row([{"op": "Tensor.matmul", "forward_ms": 9.0, "backward_ms": 6.0,
                    "calls_per_step": 1.0}, *CHAIN[:1]], line=291)  # fmt: skip
    assert FUSE_CHAIN.summary not in " ".join(a.title for a in advise(_session(matmul)))


def test_a_device_copy_is_no_chain():
    copy = _row([{"op": "Tensor.to", "forward_ms": 9.0, "backward_ms": 0.0, "calls_per_step": 2.0}],
                function="get_batch", line=131)  # fmt: skip
    assert FUSE_CHAIN.summary not in " ".join(a.title for a in advise(_session(copy)))
