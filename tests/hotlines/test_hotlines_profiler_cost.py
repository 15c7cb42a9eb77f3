"""The profiler's own cost left out of a hot line's share: an execution's first timed call pays
only what falls inside the line's clock (``config.profiler_overhead.first_call_us``), its later
calls the whole per-call cost (the gaps between them hold the mode's dispatch, the handler's
bookkeeping and the untimed reads)."""

import pytest
import torch

import torchdoctor
from torchdoctor.analyze.advice.hot_lines import hot_line_advice
from torchdoctor.analyze.advice.hot_lines_data import measured_lines


def _row(line, code, executions, torch_calls, ms, op):
    return {"file": "/w/helpers.py", "line": line, "location": f"helpers.py:{line}",
            "function": "char_tensor", "owner": "", "code": code, "loop_line": line - 2,
            "total_ms": {"mean": ms}, "forward_ms": {"mean": ms}, "backward_ms": {"mean": 0.0},
            "calls_per_step": executions, "torch_calls_per_step": torch_calls,
            "top_ops": [{"op": op, "forward_ms": ms, "calls_per_step": torch_calls}]}  # fmt: skip


def _session(overhead):
    per_element = _row(25, "tensor[c] = all_characters.index(string[c])", 40000, 40000, 225.0,
                       "Tensor.__setitem__")
    clip = _row(40, "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)", 1, 61, 1.14,
                "torch.nn.utils.clip_grad_norm_")
    return {"step_ms": {"mean": 1272.0}, "hot_lines": {"lines": [per_element, clip]},
            "config": {"profiler_overhead": overhead}}  # fmt: skip


def test_a_one_call_per_execution_loop_keeps_its_time_and_its_advice():
    """char-rnn's `tensor[c] = ...` (40,000 executions of one call a step, ~30% of the plain
    step) read 4% with 13.2 us charged per call, under the hot-line share: no advice."""
    session = _session({"per_timed_call_us": 13.2, "first_call_us": 2.0})
    rows = {r["line"]: r for r in measured_lines(session)}
    assert rows[25]["profiler_ms"] == 40000 * 2.0 / 1000  # 80 ms, not 169 (the cap)
    assert rows[25]["share"] > 0.1
    titles = [a.title for a in hot_line_advice(session)]
    assert any(t.startswith("helpers.py:25") and "per-element Python loop" in t for t in titles)


def test_a_line_in_a_loop_of_its_function_is_not_said_to_be_called_that_often():
    """char-rnn: "helpers.py:25 (called 40,000x per step from train.py:43)", where char_tensor()
    is called 200 times and its loop runs the line 40,000 times."""
    session = _session({"per_timed_call_us": 13.2, "first_call_us": 2.0})
    rows = session["hot_lines"]["lines"]
    rows[0]["called_from"] = {"location": "train.py:43", "function": "random_training_set"}
    title = next(a.title for a in hot_line_advice(session) if a.title.startswith("helpers.py:25"))
    assert "(run 40,000x per step in a loop of char_tensor(), called from train.py:43" in title
    rows[0]["loop_line"] = None  # (near miss: a line run once per call keeps "called Nx")
    title = next(a.title for a in hot_line_advice(session) if a.title.startswith("helpers.py:25"))
    assert "(called 40,000x per step from train.py:43" in title


def test_a_many_call_execution_is_still_charged_per_call():
    """Near miss: clip_grad_norm_ over 60 parameters, one execution of 61 timed calls (1.14 ms
    measured, 0.36 ms unprofiled): 60 of them pay the whole per-call cost."""
    session = _session({"per_timed_call_us": 13.2, "first_call_us": 2.0})
    clip = next(r for r in measured_lines(session) if r["line"] == 40)
    assert abs(clip["profiler_ms"] - (2.0 + 60 * 13.2) / 1000) < 0.015  # (0.805 before)
    assert clip["own_ms"] < 0.36 < clip["total_ms"] / 2


def test_a_session_without_the_first_call_cost_reads_as_before():
    session = _session({"per_timed_call_us": 13.2})
    row = next(r for r in measured_lines(session) if r["line"] == 25)
    assert row["profiler_ms"] == 0.75 * 225.0


def test_a_run_records_the_first_call_cost_under_the_per_call_cost():
    net = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, detail="always") as prof:
        for _ in range(4):
            index = torch.zeros(8, dtype=torch.long)
            for c in range(8):
                index[c] = c % 3
            loss = net(torch.randn(2, 4)).sum() + index.sum() * 0
            opt.zero_grad()
            loss.backward()
            opt.step()
            prof.step()
    overhead = prof.session["config"]["profiler_overhead"]
    assert 0.0 <= overhead["first_call_us"] <= overhead["per_timed_call_us"]


def test_a_line_with_no_backward_is_charged_the_cost_of_calls_that_make_no_node():
    """`y = y * 1.0001 + 0.1` x 30 in no-grad code: no backward hooks run for its calls, so its
    later calls are charged `no_grad_call_us`; a line with backward time the whole cost."""
    overhead = {"per_timed_call_us": 20.0, "no_grad_call_us": 6.0, "first_call_us": 1.0}
    many = _row(12, "y = y * 1.0001 + 0.1", 30, 60, 0.9, "Tensor.__mul__")
    graded = {**_row(14, "z = z * 1.0001 + 0.1", 30, 60, 1.5, "Tensor.__mul__"),
              "backward_ms": {"mean": 0.5}}  # fmt: skip
    session = {"step_ms": {"mean": 20.0}, "hot_lines": {"lines": [many, graded]},
               "config": {"profiler_overhead": overhead}}  # fmt: skip
    rows = {r["line"]: r for r in measured_lines(session)}
    assert rows[12]["profiler_ms"] == pytest.approx((30 * 1.0 + 30 * 6.0) / 1000)
    assert rows[14]["profiler_ms"] == pytest.approx((30 * 1.0 + 30 * 20.0) / 1000)
    del overhead["no_grad_call_us"]  # (a session written before: the one cost for both)
    rows = {r["line"]: r for r in measured_lines(session)}
    assert rows[12]["profiler_ms"] == pytest.approx((30 * 1.0 + 30 * 20.0) / 1000)
