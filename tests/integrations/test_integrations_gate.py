"""`torchdoctor diff BASE NEW --fail-if-slower PCT`: the CI gate on step time."""

from __future__ import annotations

import json

import pytest

from torchdoctor.analyze.gate import step_gate
from torchdoctor.cli import main
from torchdoctor.history import list_runs

# ~30 ms a step, mostly a sleep: a rerun's median moves by far less than 5% (1.5 ms).
SCRIPT = """
import sys, time, torch
extra = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for _ in range(12):
    opt.zero_grad()
    net(torch.randn(4, 8)).sum().backward()
    time.sleep(0.03 + extra)
    opt.step()
"""


def _steps(*times):
    return {"steps": [{"wall_ms": t} for t in times]}


def test_slower_beyond_threshold_and_spread_fails():
    gate = step_gate(_steps(10, 10.2, 10.4, 10.1, 10.3), _steps(12, 12.1, 12.2, 12.3, 12.4), 5)
    assert gate["slower"] and gate["beyond_threshold"] and gate["beyond_spread"]
    assert gate["delta_ms"] == pytest.approx(2.0) and gate["prob_slower"] == 1.0


def test_slower_median_inside_the_spread_passes():
    noisy = _steps(8, 9, 10, 14, 15)
    shifted = _steps(9, 10, 11, 15, 16)  # median +10%, but the quartile ranges overlap
    gate = step_gate(noisy, shifted, 5)
    assert gate["beyond_threshold"] and not gate["beyond_spread"] and not gate["slower"]


def test_consistently_but_slightly_slower_within_threshold_passes():
    gate = step_gate(_steps(10, 10, 10, 10), _steps(10.2, 10.2, 10.2, 10.2), 5)
    assert gate["beyond_spread"] and not gate["beyond_threshold"] and not gate["slower"]


def test_faster_passes_and_missing_times_are_an_error():
    assert not step_gate(_steps(20, 21, 22), _steps(10, 11, 12), 0)["slower"]
    with pytest.raises(ValueError, match="measured step time"):
        step_gate({}, _steps(1.0), 5)


def test_threshold_parsing_errors(capsys):
    with pytest.raises(SystemExit):
        main(["diff", "a.json", "b.json", "--fail-if-slower", "fast"])
    assert "expected a percentage" in capsys.readouterr().err


def test_fails_a_run_20ms_per_step_slower_and_passes_a_plain_rerun(
    tmp_path, monkeypatch, capsys, history_file
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(SCRIPT)
    for out, args in (("base", []), ("rerun", []), ("slow", ["0.02"])):
        assert main(["run", "--out", out, "train.py", *args]) == 0
    capsys.readouterr()
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    code = main(["diff", "base/session.json", "slow/session.json", "--fail-if-slower", "5%"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.startswith("## torchdoctor step-time gate: FAIL")
    assert "# torchdoctor diff:" in out  # the full diff follows the verdict
    assert summary.read_text().startswith("## torchdoctor step-time gate: FAIL")

    code = main(["diff", "base/session.json", "rerun/session.json", "--fail-if-slower", "5%"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gate: PASS" in out and summary.read_text().count("## torchdoctor step-time gate") == 2

    ids = [str(r["id"]) for r in list_runs(history_file)]  # the same runs by history id
    assert main(["diff", ids[0], ids[2], "--fail-if-slower", "5", "--format", "json"]) == 1
    gate = json.loads(capsys.readouterr().out)["gate"]
    assert gate["slower"] and gate["delta_ms"] > 15
