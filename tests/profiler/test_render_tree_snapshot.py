"""Rendering snapshot of a fixed (not measured) session: grouping, percentages, columns."""

from torchdoctor.analyze.tree import check_invariants
from torchdoctor.session import Session


def _stat(ms):
    return {"median": ms, "min": ms, "max": ms, "q1": ms, "q3": ms, "mean": ms}


def _node(path, kind, fwd, bwd, children=(), type_name=None, act=None, calls=1.0):
    return {
        "path": path,
        "name": path.rsplit(".", 1)[-1] if kind == "module" else path.split(".")[-1],
        "kind": kind,
        "type": type_name,
        "calls_per_step": calls,
        "forward_ms": _stat(fwd),
        "forward_self_ms": _stat(fwd - sum(c["forward_ms"]["mean"] for c in children)),
        "backward_ms": _stat(bwd),
        "backward_self_ms": _stat(bwd - sum(c["backward_ms"]["mean"] for c in children)),
        "total_ms": _stat(fwd + bwd),
        "activation_bytes": act,
        "source": None,
        "children": list(children),
    }


def fixed_session():
    layers = [
        _node(f"decoder.layers.{i}", "module", 4.0, 7.0, type_name="DecoderLayer", act=1 << 20)
        for i in range(12)
    ]
    decoder_self = _node("decoder.(self)", "self", 1.0, 0.0)
    decoder = _node("decoder", "module", 49.0, 84.0, [*layers, decoder_self], "Decoder", 12 << 20)
    hungarian = _node("hungarian", "region", 20.0, 0.0, calls=1.0)
    root_self = _node("(self)", "self", 32.0, 0.0)
    root = _node("", "root", 49.0, 84.0, [decoder, hungarian, root_self])
    root["name"] = "policy"
    root["total_ms"] = _stat(185.0)
    root["forward_self_ms"] = root["backward_self_ms"] = _stat(0.0)  # as in measured sessions
    s = Session.new("policy", with_environment=False)
    s["tree"] = root
    s["step_ms"] = _stat(185.0)
    s["steps"] = [{"index": 0, "wall_ms": 185.0, "phases": {}, "peak_memory_bytes": None}]
    s["phases"] = {
        "data": _stat(5.0),
        "forward": _stat(69.0),
        "backward": _stat(84.0),
        "optimizer": _stat(20.0),
        "other": _stat(7.0),
    }
    s["config"] = {"steps": 1, "timing": "perf_counter", "notes": ["fixed example"]}
    return s


EXPECTED = """\
policy: 185 ms in its one step (timing: perf_counter)
phases (ms): data 5 3% | forward 69 37% | backward 84 45% | optimizer 20 11% | other 7 4%
module / region                    total ms  % parent  % step                fwd ms  bwd ms  saved act.  calls
policy                                  185    100.0%  100.0%  ████████████      49      84           -
├─ decoder                              133     71.9%   71.9%  ████████▌         49      84     12.0 MB      1
│  ├─ layers[0-11]  (12 x ~11 ms)       132     99.2%   71.4%  ████████▌         48      84     12.0 MB      1
│  └─ (self)                              1      0.8%    0.5%  ·                  1       0           -
├─ [hungarian]                           20     10.8%   10.8%  █                 20       0           -      1
└─ (self)                                32     17.3%   17.3%  ██                32       0           -
notes: fixed example"""


def test_fixed_session_adds_up():
    s = fixed_session()
    assert check_invariants(s["tree"], step_ms=185.0) == []


def test_render_snapshot():
    text = fixed_session().tree(width=120)
    assert text == EXPECTED, "\n" + text


def test_the_headline_counts_the_detailed_steps_left_out_for_their_wait():
    """The busy-step note said 5 steps were left out while the headline counted only the long
    ones ("22 detailed steps (4 outliers left out)")."""
    s = fixed_session()
    s["config"] = {"steps": 100, "timing": "perf_counter", "notes": [], "detail": {
        "mode": "windows", "detailed_count": 20, "outlier_steps": [40], "busy_steps": [3, 4, 5]}}
    headline = " ".join(s.tree(width=300).splitlines()[:2])
    assert "tree and phases from 16 detailed steps (1 outlier and 3 that waited for a CPU core " \
        "left out)" in headline
