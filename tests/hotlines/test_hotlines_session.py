"""Hot lines in the Session: the invariant (a node's lines never add up past the (self) they
refine), JSON round trip, old sessions, reports, and the advice giving way."""

from __future__ import annotations

import json

import pytest
import torch
from hotlines_helpers import mean, profile

import torchdoctor
from torchdoctor.analyze.advice import advice_dicts
from torchdoctor.collect.lines_session import hot_lines_section
from torchdoctor.render.console import render_console
from torchdoctor.render.html import render_html
from torchdoctor.render.markdown import render_markdown
from torchdoctor.session import Session
from torchdoctor.session_read import walk


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(24, 24)
        self.b = torch.nn.Linear(24, 24)

    def forward(self, x):
        h = self.a(x)
        for _ in range(6):
            h = h * torch.sigmoid(h) + h.roll(1, 0)
        return self.b(h).tanh()


def _mixed_step():
    net = Block()
    x = torch.randn(128, 24)
    target = torch.randn(128, 24)

    def step():
        out = net(x)
        loss = (out - target).pow(2).mean()
        with torchdoctor.region("penalty"):
            for k in range(8):
                loss = loss + (out[:, k] - out[:, k + 1]).abs().mean() * 0.01
        loss = loss + sum(p.pow(2).sum() for p in net.parameters()) * 1e-4
        loss.backward()

    return net, step


def _self_of(node):
    kids = node.get("children") or []
    return next((k for k in kids if k["kind"] == "self"), node if not kids else None)


def test_a_nodes_hot_lines_never_add_up_past_the_self_they_refine():
    net, step = _mixed_step()
    session = profile(step, steps=4, model=net)
    lines = session["hot_lines"]["lines"]
    owners = {line["owner"] for line in lines}
    assert {"", "Block", "penalty"} <= owners
    nodes = {n["path"]: n for n, _ in walk(session["tree"]) if n["kind"] != "self"}
    for owner in owners:
        own = _self_of(nodes[owner])
        mine = [line for line in lines if line["owner"] == owner]
        total = sum(mean(line["total_ms"]) for line in mine)
        backward = sum(mean(line["backward_ms"]) for line in mine)
        assert total <= mean(own["total_ms"]) * (1 + 1e-9) + 1e-9, owner
        assert backward <= mean(own["backward_ms"]) * (1 + 1e-9) + 1e-9, owner
        # the (self) row points at its heaviest line (the step's own: measured or, for a line
        # with no torch call, sampled; a line measured keeps its measured time)
        heaviest = [(mean(line["total_ms"]), line["location"]) for line in mine]
        timed = {where for _, where in heaviest}
        heaviest += [(row["ms_per_step"], row["location"]) for row in session.get("other_lines") or ()
                     if owner == "" and row.get("line") is not None and row["location"] not in timed]
        assert own["hot_lines"][0]["location"] == max(heaviest)[1]


def test_fitting_scales_lines_down_to_their_self():
    entry = {"forward_ns": 6e6, "backward_ns": 4e6, "calls": 1, "torch_calls": 2, "ops": {},
             "via": {}}  # fmt: skip
    step = {"wall_ms": 10.0, "phases": {"forward": 4.0, "backward": 2.0}, "forward": {},
            "backward": {}, "lines": {("t.py", 3, "f", 1, 0): entry}}  # fmt: skip
    (line,) = hot_lines_section([step], parent=[-1], path=[""], kind=["root"])["lines"]
    assert mean(line["backward_ms"]) == pytest.approx(2.0)  # the step's self backward
    assert mean(line["total_ms"]) == pytest.approx(8.0)  # 6 forward fits the 10 ms step
    assert line["scaled"] == pytest.approx(0.8)


def test_fitting_scales_an_ops_forward_and_backward_apart():
    """A node whose self backward is 0 (its backward ran outside the backward phase: a
    gradient penalty's autograd.grad) scales its lines' backward to 0, not their ops' forward."""
    entry = {"forward_ns": 2e6, "backward_ns": 1e6, "calls": 1, "torch_calls": 1,
             "ops": {"Tensor.norm": [2e6, 1, 1e6]}, "via": {}}  # fmt: skip
    step = {"wall_ms": 10.0, "phases": {"forward": 10.0}, "forward": {}, "backward": {},
            "lines": {("t.py", 3, "f", 1, 0): entry}}  # fmt: skip
    (line,) = hot_lines_section([step], parent=[-1], path=[""], kind=["root"])["lines"]
    assert mean(line["backward_ms"]) == 0.0 and mean(line["forward_ms"]) == pytest.approx(2.0)
    (op,) = line["top_ops"]
    assert op["forward_ms"] == pytest.approx(2.0) and op["backward_ms"] == 0.0


def test_sessions_round_trip_and_old_sessions_without_hot_lines_load(tmp_path):
    _, step = _mixed_step()
    session = profile(step)
    path = session.save(tmp_path / "s.json")
    again = Session.load(path)
    assert again["hot_lines"] == json.loads(json.dumps(session["hot_lines"]))
    old = json.loads(path.read_text())
    del old["hot_lines"]
    legacy = Session.from_dict(old)
    assert legacy["hot_lines"] is None
    assert render_markdown(legacy) and render_html(legacy) and render_console(legacy)


def test_reports_show_the_hot_lines_section_grouped_by_function():
    _, step = _mixed_step()
    session = profile(step)
    markdown = render_markdown(session)
    assert "### Hot lines" in markdown and "**_mixed_step" not in markdown
    assert "| **step() (test_hotlines_session.py:" in markdown
    html = render_html(session)
    assert 'id="hot-lines-table"' in html
    console = render_console(session)
    assert "Hot lines" in console and "(self)  → test_hotlines_session.py:" in console


def test_unattributed_gives_way_to_measured_lines_and_returns_without_them():
    def functional():
        w = torch.randn(64, 64, requires_grad=True)
        x = torch.randn(64, 64)
        ((x @ w).tanh() @ w).pow(2).mean().backward()  # no module, no region

    with_lines = profile(functional)
    rules = [a["rule"] for a in with_lines["advice"]]
    why = {k: with_lines.get(k) for k in ("step_ms", "hot_lines", "phases", "config", "tree")}
    assert rules and "unattributed" not in rules and rules[0] == "hot-line", json.dumps(why)
    without = profile(functional, hot_lines=False)
    without["advice"] = advice_dicts(without)
    assert "hot-line" not in [a["rule"] for a in without["advice"]]


def test_a_section_whose_steps_all_carry_line_backward_says_where_it_was_measured():
    entry = {"forward_ns": 2e6, "backward_ns": 1e6, "calls": 1, "torch_calls": 1, "ops": {},
             "via": {}, "backward_estimated": True}  # fmt: skip
    steps = [{"wall_ms": 10.0, "phases": {"backward": 3.0}, "forward": {}, "backward": {},
              "lines": {("t.py", 3, "f", 1, 0): dict(entry)}} for _ in range(3)]  # fmt: skip
    section = hot_lines_section(steps, parent=[-1], path=[""], kind=["root"])
    assert section["backward_carried_steps"] == 3
    (note,) = [n for n in section["notes"] if "graph hooks" in n]
    assert "in a step before these" in note and "0 of" not in note
    steps[0]["lines"][("t.py", 3, "f", 1, 0)].pop("backward_estimated")
    section = hot_lines_section(steps, parent=[-1], path=[""], kind=["root"])
    assert any("graph hooks in 1 of 3 steps" in n for n in section["notes"])
