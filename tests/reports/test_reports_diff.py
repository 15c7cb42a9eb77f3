"""Session diff: per-phase and per-module change, syncs removed and added; the diff command."""

from __future__ import annotations

import json

import pytest
from reports_sessions import node, s, slow_session

from torchdoctor.analyze.diff import diff_sessions
from torchdoctor.cli import main
from torchdoctor.render.diff import render_diff
from torchdoctor.session import Session


def fixed_session():
    """The slow session after caching the encoder and removing the .item() sync."""
    new = slow_session()
    model = new["tree"]["children"][0]
    encoder = model["children"][0]
    encoder["total_ms"] = s(1.5)
    encoder["forward_ms"] = s(1.0)
    encoder["backward_ms"] = s(0.5)
    model["children"].append(node("model.cache", 0.1, type="Identity"))
    new["step_ms"] = s(186.5)
    new["phases"]["forward"] = s(46.5)
    new["syncs"] = [r for r in new["syncs"] if r["kind"] != "item"]
    new["syncs"].append(
        {
            "kind": "tolist",
            "op": "ids.tolist()",
            "file": "/x/train.py",
            "line": 120,
            "per_step": 1.0,
            "phase": "other",
        }
    )
    new["syncs"][0]["line"] = 95  # moved by the edit: still the same sync
    new["label"] = "after"
    return new


def test_diff_reports_step_phase_module_and_sync_changes():
    d = diff_sessions(slow_session(), fixed_session())
    assert d["step"]["delta_ms"] == pytest.approx(-13.5)
    assert d["step"]["speedup"] == pytest.approx(200 / 186.5)
    assert [p["phase"] for p in d["phases"]] == [
        "data",
        "forward",
        "backward",
        "optimizer",
        "other",
    ]
    forward = next(p for p in d["phases"] if p["phase"] == "forward")
    assert forward["delta_ms"] == pytest.approx(-13.5)
    top = d["modules"][0]
    assert top["path"] == "model.encoder" and top["delta_ms"] == pytest.approx(-13.5)
    assert top["forward"]["delta_ms"] == pytest.approx(-9.0)
    added = [m for m in d["modules"] if m["status"] == "added"]
    assert [m["path"] for m in added] == ["model.cache"]
    assert [r["op"] for r in d["syncs_removed"]] == ["loss.item()"]
    assert [r["op"] for r in d["syncs_added"]] == ["ids.tolist()"]
    assert d["syncs_kept"] == 2
    assert d["syncs_per_step"] == {"old": 14.0, "new": 12.0}


def test_identical_sessions_have_no_change():
    d = diff_sessions(slow_session(), slow_session())
    assert d["step"]["delta_ms"] == 0
    assert all(m["delta_ms"] == 0 for m in d["modules"])
    assert d["syncs_removed"] == d["syncs_added"] == []


def test_render_diff_markdown():
    text = render_diff(diff_sessions(slow_session(), fixed_session()))
    assert "1.07x faster" in text
    assert "| model.encoder | 15 ms | 1.5 ms | -13.5 ms (-90%)" in text
    assert "## Syncs removed" in text and "loss.item()" in text
    assert "## Syncs added" in text and "ids.tolist()" in text


def test_diff_rejects_non_sessions():
    with pytest.raises(TypeError, match="old must be a Session"):
        diff_sessions(3, {})


def test_diff_command(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    Session.from_dict(slow_session()).save(old)
    Session.from_dict(fixed_session()).save(new)
    assert main(["diff", str(old), str(new)]) == 0
    assert "Syncs removed" in capsys.readouterr().out
    out = tmp_path / "d.json"
    assert main(["diff", str(old), str(new), "--format", "json", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["syncs_kept"] == 2
    assert main(["diff", str(old), str(tmp_path / "missing.json")]) == 2
