"""A measured line that only calls into a framework's loop (``trainer.fit(...)``): its time is
the framework's own work, and the advice says so instead of "move loop-invariant work out"."""

from reports_sessions import slow_session

from torchdoctor.analyze.advice import advise

LIGHTNING = "/env/lib/python3.11/site-packages/lightning/pytorch/loops/optimization/automatic.py"


def _session(via_ms):
    session = slow_session()
    rest = next(c for c in session["tree"]["children"] if c["kind"] == "self")
    rest["forward_ms"] = {"median": 80.0, "mean": 80.0}
    row = {
        "file": "/x/train.py", "line": 27, "location": "train.py:27", "function": "<module>",
        "function_line": 1, "code": "trainer.fit(Net(), loader)", "owner": "",
        "owner_kind": "root", "forward_ms": {"median": 20.0, "mean": 20.0},
        "backward_ms": {"median": 0.0, "mean": 0.0}, "total_ms": {"median": 20.0, "mean": 20.0},
        "calls_per_step": 2.0, "torch_calls_per_step": 19.0,
        "top_ops": [{"op": "Tensor.div", "forward_ms": 5.0, "backward_ms": 0.0,
                     "calls_per_step": 2.0}],
        "via": [{"file": LIGHTNING, "line": 146, "function": "__call__", "ms": via_ms}],
    }  # fmt: skip
    session["hot_lines"] = {"steps": 5, "lines": [row]}
    return session


def _line(session):
    (item,) = [a for a in advise(session) if a.locations == ["/x/train.py:27"]]
    return item


def test_a_line_whose_torch_calls_are_a_frameworks_names_the_framework():
    item = _line(_session(via_ms=18.0))
    assert item.title.endswith("lightning's own work per step, not code on this line")
    assert item.fix.startswith("Nothing to rewrite on this line") and "automatic.py:146" in item.fix


def test_a_line_with_its_own_torch_calls_keeps_the_generic_advice():
    item = _line(_session(via_ms=2.0))
    assert item.title.endswith("the heaviest measured source line")
    assert item.fix.startswith("Look at this line first")


def test_a_periodic_round_trip_is_not_advised_as_the_steps():
    from reports_sessions import clean_session

    from torchdoctor.analyze.advice.cpu_work import cpu_work

    session = clean_session()
    lib = "/v/site-packages/torchvision/utils.py"
    session["syncs"] = [{"kind": "cpu", "op": "ndarr = grid.mul(255)...", "file": lib,
                         "line": 279, "count": 2, "per_step": 1 / 3, "steps": 1}]  # fmt: skip
    assert cpu_work(session) == []  # an image saved in 1 of 6 audited steps
    session["syncs"][0].update(count=6, per_step=1.0, steps=6)
    assert [a.rule for a in cpu_work(session)] == ["cpu-work"]


def test_only_the_heaviest_of_the_lines_with_nothing_specific_is_an_advice():
    """mnist_forward_forward got three 'the heaviest measured source line' items (8%, 6%, 6%):
    the others are the first one's evidence."""
    from torchdoctor.analyze.advice.hot_lines import hot_line_advice

    session = _session(via_ms=2.0)
    first = session["hot_lines"]["lines"][0]
    second = {**first, "line": 31, "location": "train.py:31", "code": "y = x.norm(dim=1)",
              "forward_ms": {"median": 12.0, "mean": 12.0},
              "total_ms": {"median": 12.0, "mean": 12.0}}  # fmt: skip
    session["hot_lines"]["lines"].append(second)
    generic = [a for a in hot_line_advice(session) if a.title.endswith("source line")]
    assert [a.locations for a in generic] == [["/x/train.py:27"]]
    assert any(e.startswith("next: train.py:31 `y = x.norm(dim=1)`") for e in generic[0].evidence)


GPYTORCH = "/env/lib/python3.11/site-packages/linear_operator/operators/_linear_operator.py"


def _gp_session(backward_ms, top_op="InvQuadLogdet.apply", top_ms=380.0):
    """gpytorch's exact GP (clients round 21): `loss = -mll(output, y)` is the model's whole
    computation (its modules bypass nn.Module hooks), 99% of the step."""
    session = _session(via_ms=18.0)
    row = session["hot_lines"]["lines"][0]
    row.update(
        code="loss = -mll(output, train_y)", forward_ms={"median": 450.0, "mean": 450.0},
        backward_ms={"median": backward_ms, "mean": backward_ms},
        total_ms={"median": 450.0 + backward_ms, "mean": 450.0 + backward_ms},
        top_ops=[{"op": top_op, "forward_ms": top_ms, "backward_ms": 0.0, "calls_per_step": 1}],
        via=[{"file": GPYTORCH, "line": 1781, "function": "inv_quad_logdet", "ms": 440.0}],
    )  # fmt: skip
    return session


def test_a_library_computing_the_model_is_not_told_to_look_for_a_logging_option():
    item = _line(_gp_session(backward_ms=69.0))
    assert item.title.endswith("linear_operator's computation of the model, made inside it")
    assert "torchdoctor.region" in item.fix and "how often it logs" not in item.fix
    assert "_linear_operator.py:1781" in item.fix
    item = _line(_gp_session(backward_ms=0.0))  # (no backward: its heaviest call, a Function)
    assert item.title.endswith("computation of the model, made inside it")


def test_a_library_line_with_light_calls_and_no_backward_stays_framework_work():
    item = _line(_gp_session(backward_ms=0.0, top_op="Tensor.div", top_ms=380.0))
    assert item.title.endswith("linear_operator's own work per step, not code on this line")
    item = _line(_gp_session(backward_ms=0.0, top_ms=50.0))  # (a Function, a ninth of the line)
    assert "how often it logs" in item.fix
