import json

import pytest

from torchdoctor.session import SCHEMA_VERSION, Session, stat


def test_save_load_round_trip(tmp_path):
    s = Session.new("demo")
    s["steps"] = [
        {"index": 0, "wall_ms": 1.5, "phases": {"forward": 1.0}, "peak_memory_bytes": None}
    ]
    s["step_ms"] = stat([1.5])
    path = s.save(tmp_path / "sub" / "s.json")
    loaded = Session.load(path)
    assert loaded == s
    assert loaded.to_dict() == json.loads(path.read_text())
    assert not list(tmp_path.glob("sub/.s.json.*"))  # no temporary file left behind


def test_from_dict_rejects_wrong_version():
    with pytest.raises(ValueError, match="schema_version"):
        Session.from_dict({"schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ValueError, match="schema_version"):
        Session.from_dict({"steps": []})


def test_load_rejects_non_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Session.load(p)


def test_save_rejects_non_json_values(tmp_path):
    s = Session.new("x", with_environment=False)
    s["label"] = object()
    with pytest.raises(TypeError, match="not JSON data"):
        s.save(tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_stat_quartiles():
    st = stat([4.0, 1.0, 3.0, 2.0, 5.0])
    assert st == {"median": 3.0, "min": 1.0, "max": 5.0, "q1": 2.0, "q3": 4.0}
