"""`torchdoctor tune` end to end, and `torchdoctor report` merging its session into a run's."""

from __future__ import annotations

import json
import textwrap

from torchdoctor.analyze.advice import advise
from torchdoctor.cli import main
from torchdoctor.session import Session
from torchdoctor.tuning.session import tune_session

FOREVER = """
import torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.Adam(net.parameters(), lr=0.01)
x, y = torch.randn(32, 8), torch.randn(32, 1)
while True:
    opt.zero_grad()
    ((net(x) - y) ** 2).mean().backward()
    opt.step()
"""


def test_tune_command_measures_a_knob_skips_the_rest_and_writes_its_session(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(FOREVER))
    out = tmp_path / "out"
    code = main(["tune", "--knobs", "foreach_optimizer,tf32,channels_last", "--rounds", "1",
                 "--steps", "3", "--warmup", "1", "--out", str(out), "--format", "json",
                 str(script)])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["knob"]: row for row in result["rows"]}
    assert rows["foreach_optimizer"]["status"] == "measured"
    assert rows["foreach_optimizer"]["speedup"]["pairs"] == 1
    assert rows["tf32"]["reason"].startswith("needs CUDA")
    assert "no Conv2d/Conv3d" in rows["channels_last"]["reason"]
    saved = Session.load(out / "tune.json")
    assert saved["config"]["command"] == "tune" and saved["tune"]["rows"]


def test_tune_command_rejects_an_unknown_knob(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    assert main(["tune", "--knobs", "warp_drive", "--out", str(tmp_path), str(script)]) == 2
    assert "unknown knob(s) warp_drive" in capsys.readouterr().err


def _run_session() -> Session:
    session = Session.new("train.py", with_environment=False)
    session["step_ms"] = {"median": 100.0, "min": 90.0, "max": 110.0, "q1": 95.0, "q3": 105.0}
    session["phases"] = {"forward": {"median": 40.0}, "backward": {"median": 40.0}}
    session["environment"] = {"device": "cpu"}
    return session


def _tune(speedup: float, accepted: bool = True) -> Session:
    row = {"knob": "compile", "title": "torch.compile", "status": "measured",
           "accepted": accepted, "verdict": "faster" if accepted else "no gain",
           "speedup": {"median": speedup, "low": speedup - 0.05, "high": speedup + 0.05,
                       "pairs": 3}, "drift": 0.001, "drift_limit": 0.05,
           "snippet": "model.compile()"}  # fmt: skip
    return tune_session({"script": "/somewhere/train.py", "rows": [row],
                         "baseline": {"steps_ms": [80.0, 82.0]}})  # fmt: skip


def test_run_knob_advice_says_how_to_measure_it():
    (stated,) = [a for a in advise(_run_session()) if a.rule == "engine-knobs"]
    assert "Measure it: torchdoctor tune train.py" in stated.fix


def test_report_merges_the_tune_of_the_same_script_so_the_advice_is_measured(tmp_path, capsys):
    _run_session().save(tmp_path / "session.json")
    _tune(1.25).save(tmp_path / "tune.json")
    assert main(["report", str(tmp_path / "session.json"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rules = [a["rule"] for a in data["advice"]]
    assert "engine-knobs" not in rules  # the stated compile guess is replaced...
    (measured,) = [a for a in data["advice"] if a["rule"] == "tuned-knob"]
    assert measured["estimated_saving_ms"] == 100.0 * (1 - 1 / 1.25)  # ...by the measurement
    assert measured["priority"] == 1 and "1.25x" in measured["title"]


def test_report_ignores_a_tune_of_another_script_and_one_that_found_no_gain(tmp_path, capsys):
    other = _tune(1.25)
    other["config"]["script"] = "/elsewhere/other.py"
    _run_session().save(tmp_path / "session.json")
    other.save(tmp_path / "tune.json")
    assert main(["report", str(tmp_path / "session.json"), "--format", "json"]) == 0
    rules = [a["rule"] for a in json.loads(capsys.readouterr().out)["advice"]]
    assert "tuned-knob" not in rules and "engine-knobs" in rules
    no_gain = _tune(1.0, accepted=False)
    merged = [a.rule for a in advise({**_run_session().to_dict(), "tune": no_gain["tune"]})]
    assert "tuned-knob" not in merged and "engine-knobs" not in merged  # measured: no guess


def test_tune_text_shows_graph_break_reasons_and_script_names_verbatim():
    """A break reason quoting source (``x[idx]``, ``[bold]``) is text, not rich markup."""
    from torchdoctor.render.tune import render_tune_text

    tune = {"baseline": {"step_ms": 20.0}, "label": "train[v2].py", "rows": [{
        "knob": "compile", "status": "measured", "verdict": "slower",
        "speedup": {"median": 0.9, "low": 0.8, "high": 1.0, "pairs": 3},
        "graph_breaks": [{"file": "model.py", "line": 7,
                          "reason": "data-dependent: keep[mask] with [bold] in it"}]}]}  # fmt: skip
    text = render_tune_text(tune, width=200)
    assert "data-dependent: keep[mask] with [bold] in it" in text
