"""What Dynamo writes in the graph of code compiled under the profiler: the graph a cache
accepts, with the user's source lines on its nodes (collect/compiled.py ``call_as_written``).

Dynamo inlines every torch function mode's handler. Handing it the call as the handler
received it (``torch.Tensor.split(x, 2)``) put a function node where the plain trace has a
method node; AOTAutograd's cache refuses such a graph, so each run of a compiled model under
``torchdoctor run`` compiled it from scratch (a warm-cache first step 2.6 s plain, 4.2-6.2 s
profiled).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchdoctor

pytest.importorskip("torch._dynamo")


class _Attention(nn.Module):
    """Python-level tensor methods (``split``), operators, ``x[i]``, ``x += y``."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(8, dim=-1)
        scores = (q @ k.transpose(-1, -2)).softmax(-1)
        out = scores @ v
        out += x[:, :1]
        return out.norm(dim=-1) - 1


def _graphs_of(run) -> list[torch.fx.GraphModule]:
    """The graphs Dynamo hands its backend while ``run(compile)`` runs."""
    import torch._dynamo

    torch._dynamo.reset()
    seen: list[torch.fx.GraphModule] = []

    def backend(gm, example_inputs):
        seen.append(gm)
        return gm.forward

    run(lambda fn: torch.compile(fn, backend=backend))
    return seen


def _step(compile, prof=None):
    torch.manual_seed(0)
    model = _Attention()
    compiled = compile(model)
    x = torch.randn(2, 4, 8)
    for _ in range(3):
        compiled(x).sum().backward()
        if prof is not None:
            prof.step()


def _profiled(compile):
    with torchdoctor.Profiler(syncs=True, window=3, period_steps=5) as prof:
        _step(compile, prof)


def _calls(gm):
    return [(node.op, str(node.target)) for node in gm.graph.nodes
            if node.op in ("call_function", "call_method")]


def test_code_compiled_under_the_profiler_gets_the_graph_it_gets_without_it():
    from torch._functorch._aot_autograd.autograd_cache import check_node_safe

    plain = _graphs_of(_step)
    profiled = _graphs_of(_profiled)
    assert len(plain) == len(profiled) == 1
    names = _calls(profiled[0])
    assert ("call_method", "split") in names  # a method node, as in the plain graph
    assert [n for n in names if "Tensor." in n[1]] == []  # no torch.Tensor.split(x, ...)
    for node in profiled[0].graph.nodes:
        check_node_safe(node)  # AOTAutograd's cache takes every node (raises when not)
    # the same graph: Dynamo traced as if the profiler's modes were not on the stack (a handler
    # it inlines writes ``x + y`` as x.add(y), and costs tracing time per op)
    assert names == _calls(plain[0])


class _Scaled(torch.overrides.TorchFunctionMode):
    """A mode of the user's own, entered inside the compiled code."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        return out * 2 if func is torch.Tensor.sin else out


def test_compiled_code_that_enters_a_mode_keeps_the_profilers_modes_on_the_stack():
    from torch.overrides import _get_current_function_mode_stack

    def fn(x):
        with _Scaled():
            y = x.sin()
        with torch.device("cpu"):
            z = torch.ones(3)
        return y + z

    x = torch.randn(3)
    with torchdoctor.Profiler(syncs=True, window=3, period_steps=5) as prof:
        compiled = torch.compile(fn, backend="eager")
        for _ in range(3):
            before = [type(m) for m in _get_current_function_mode_stack()]
            out = compiled(x)
            assert [type(m) for m in _get_current_function_mode_stack()] == before
            prof.step()
    assert before  # the profiler's modes were there, and are there after each call
    torch.testing.assert_close(out, x.sin() * 2 + 1)


def test_the_graph_names_the_users_lines_not_the_profilers():
    (gm,) = _graphs_of(_profiled)
    traces = [node.stack_trace or "" for node in gm.graph.nodes if node.op.startswith("call_")]
    assert traces and all(__file__ in trace for trace in traces)
    assert not [t for t in traces if "torchdoctor/collect" in t.replace("\\", "/")]
