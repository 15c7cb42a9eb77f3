"""Cost of the hot-lines collector (suite "hotlines"): the profiler with and without it.

Three training steps, each profiled two ways in interleaved rounds (A B B A ...; each round
starts a profiler, runs one untimed step, then times one step including its ``prof.step()``):
``hot_lines=False`` vs ``hot_lines=True`` (both: backward attribution and memory on, no sync
audit). The overhead is the median over rounds of the per-round ratio minus one.

- a small GPT (4 blocks, width 128, 4 heads, sequence 64, batch 8) written as *user* modules
  whose forward is functional code (attention by hand): every torch call of a block is timed
  and charged to a line;
- examples/slow_train.py's step (a per-sample ``linalg.solve`` loop, 320 small calls per step):
  the worst case, thousands of tiny ops from user lines;
- ``nn.Transformer`` (12 layers, width 256): library modules, whose calls the collector hands on
  untimed (it only checks who owns the call).

The user-code models are written to a temporary file and imported from there, so their frames
are user frames (code inside the torchdoctor package is library code to the collector).

Run: ``torchdoctor bench hotlines`` (``--quick`` for tiny sizes).

Example:
    >>> tables = run(quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torchdoctor
from torchdoctor.benchmarks._models import transformer_train_step
from torchdoctor.measure.compare import quantile
from torchdoctor.measure.table import BenchTable
from torchdoctor.measure.threads import intra_op_threads

USER_MODELS = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)
        self.ln1 = nn.LayerNorm(width)
        self.ln2 = nn.LayerNorm(width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
        q = q.view(b, t, self.heads, -1).transpose(1, 2)
        k = k.view(b, t, self.heads, -1).transpose(1, 2)
        v = v.view(b, t, self.heads, -1).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        x = x + self.out(y)
        return x + self.down(torch.nn.functional.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, width, heads, depth, length):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(length, width))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.head = nn.Linear(width, vocab)

    def forward(self, idx):
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def gpt_step(quick):
    torch.manual_seed(0)
    vocab, width, heads, depth, length, batch = (64, 32, 2, 2, 16, 2) if quick else (
        256, 128, 4, 4, 64, 8)
    model = GPT(vocab, width, heads, depth, length)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, vocab, (batch, length))

    def step():
        logits = model(idx)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step, f"GPT {depth} blocks, width {width}, seq {length}, batch {batch}"


def slow_train_step(quick):
    torch.manual_seed(0)
    dim, batch = (8, 16) if quick else (32, 64)
    model = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, dim))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, dim)

    def penalty(z, cov):
        total = z.new_zeros(())
        for i in range(z.shape[0]):
            total = total + z[i] @ torch.linalg.solve(cov, z[i])
        return total / z.shape[0]

    def step():
        z = model(x)
        cov = torch.cov(z.detach().T) + 0.1 * torch.eye(dim)
        loss = z.pow(2).mean() + 0.01 * penalty(z, cov)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return model, step, f"slow_train step: {batch} solves per step (dim {dim})"
"""


def _user_models() -> Any:
    """Import :data:`USER_MODELS` from a temporary file (user code to the collector)."""
    folder = Path(tempfile.mkdtemp(prefix="td_hotlines_"))
    path = folder / "hot_lines_user_models.py"
    path.write_text(USER_MODELS)
    spec = importlib.util.spec_from_file_location("hot_lines_user_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hot_lines_user_models"] = module
    spec.loader.exec_module(module)
    return module


def _profiled_step(model: Any, step: Callable[[], Any], hot_lines: bool) -> float:
    """Wall ms of one profiled step (after one untimed step under the same profiler)."""
    with torchdoctor.Profiler(model, syncs=False, hot_lines=hot_lines) as prof:
        step()
        prof.step()
        prof.flush_steps()
        start = time.perf_counter_ns()
        step()
        prof.step()
        prof.flush_steps()  # (the step's summary, made in a batch: collect/step_queue.py)
        elapsed = (time.perf_counter_ns() - start) / 1e6
    return elapsed


def _compare(model: Any, step: Callable[[], Any], rounds: int) -> dict[str, Any]:
    off: list[float] = []
    on: list[float] = []
    ratios: list[float] = []
    for index in range(rounds):
        gc.collect()
        order = (False, True) if index % 2 == 0 else (True, False)
        times = {flag: _profiled_step(model, step, flag) for flag in order}
        off.append(times[False])
        on.append(times[True])
        ratios.append(times[True] / times[False])
    return {
        "off": statistics.median(off),
        "on": statistics.median(on),
        "overhead": 100.0 * (statistics.median(ratios) - 1.0),
        "q1": 100.0 * (quantile(ratios, 0.25) - 1.0),
        "q3": 100.0 * (quantile(ratios, 0.75) - 1.0),
    }


def run(quick: bool = False) -> list[BenchTable]:
    """One table: per model, the profiled step without and with hot lines, and the overhead.

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("hotlines"))["hot_lines_overhead"] is run  # `torchdoctor bench hotlines`
        True
    """
    with intra_op_threads(1):
        try:
            user = _user_models()
            rounds = 3 if quick else 10
            cases = [user.gpt_step(quick), user.slow_train_step(quick), transformer_train_step(quick)]
            rows = []
            for model, step, label in cases:
                result = _compare(model, step, rounds)
                rows.append(
                    [
                        label,
                        f"{result['off']:.3g}",
                        f"{result['on']:.3g}",
                        f"{result['overhead']:.3g}",
                        f"{result['q1']:.3g} to {result['q3']:.3g}",
                    ]
                )
        finally:
            sys.modules.pop("hot_lines_user_models", None)
    return [
        BenchTable(
            title="Hot lines: profiled step without vs with the line collector",
            columns=[
                "step",
                "hot_lines=False ms",
                "hot_lines=True ms",
                "overhead %",
                "q1-q3 %",
            ],
            rows=rows,
            notes=[
                f"{rounds} interleaved rounds (order alternated); overhead = median over rounds "
                "of (with / without - 1); both with backward attribution and memory, no sync "
                "audit; one intra-op thread",
                "GPT and slow_train are user modules / user functions (every torch call timed "
                "and charged to a line); nn.Transformer is library modules (calls handed on)",
            ],
        )
    ]
