"""Profiler overhead and accuracy (suite "profiler").

1. Overhead on a training step (forward + backward + AdamW) of a transformer encoder-decoder
   (``nn.Transformer``, 6 encoder + 6 decoder layers = 12 layers, width 256, feed-forward 1024,
   batch 8, sequence 64): profiler off vs forward-only vs with backward attribution (the chosen
   tensor hooks, and full backward hooks for comparison) vs the default (plus activation
   memory) vs torch.profiler. Interleaved in one process: each round times one step of every
   variant in turn (a profiler is started, runs one untimed step, then the timed step including
   its ``prof.step()`` bookkeeping, then stops), and the overhead is the median over rounds of
   the per-round ratio variant / off.
2. The same on a small-op stress case (many tiny modules) - the worst case for any hook.
3. Accuracy: each module's attributed forward time vs the same module timed alone on the inputs
   it received, for modules >= 1 ms.
4. Cost of ``torchdoctor.region`` and ``torchdoctor.step`` when no profiler is active.

Run: ``torchdoctor bench profiler`` (``--quick`` for tiny sizes).

Example:
    >>> tables = run(quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import torchdoctor
from torchdoctor.benchmarks._models import transformer_train_step
from torchdoctor.measure.table import BenchTable
from torchdoctor.measure.threads import intra_op_threads
from torchdoctor.session_read import quantile, walk


def _tiny_modules(quick: bool) -> tuple[nn.Module, Callable[[], None], str]:
    torch.manual_seed(0)
    count = 20 if quick else 200
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(count)])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(4, 8)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).sum().backward()
        opt.step()

    return model, step, f"{count} x Linear(8, 8), batch 4"


class _FullBackwardHooks:
    """The alternative not chosen: global full backward pre/post hooks recording timestamps."""

    def __enter__(self) -> _FullBackwardHooks:
        from torch.nn.modules import module as m

        self.events: list[tuple[int, int]] = []
        record = self.events.append
        clock = time.perf_counter_ns
        self._handles = [
            m.register_module_full_backward_pre_hook(lambda mod, g: record((id(mod), clock()))),
            m.register_module_full_backward_hook(lambda mod, gi, go: record((id(mod), clock()))),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()


def _timed_both(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    fn()
    return (time.perf_counter_ns() - wall) / 1e6, (time.process_time_ns() - cpu) / 1e6


def _variants(model: nn.Module) -> dict[str, Callable[[Callable[[], None]], tuple]]:
    def profiled(**options: Any) -> Callable[[Callable[[], None]], tuple]:
        def run(step: Callable[[], None]) -> tuple[float, float]:
            with torchdoctor.Profiler(model, **options) as prof:
                step()
                prof.step()
                prof.flush_steps()  # (only the timed step's summary inside the timer)
                return _timed_both(lambda: (step(), prof.step(), prof.flush_steps()))

        return run

    def full_backward_hooks(step: Callable[[], None]) -> tuple[float, float]:
        with torchdoctor.Profiler(model, backward=False, memory=False, syncs=False) as prof:
            with _FullBackwardHooks():
                step()
                prof.step()
                prof.flush_steps()  # (only the timed step's summary inside the timer)
                return _timed_both(lambda: (step(), prof.step(), prof.flush_steps()))

    def torch_profiler(step: Callable[[], None]) -> tuple[float, float]:
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=activities):
            step()
            return _timed_both(step)

    def off(step: Callable[[], None]) -> tuple[float, float]:
        step()  # the same untimed step before the timed one as the profiled variants
        return _timed_both(step)

    return {
        "off": off,
        "forward only": profiled(backward=False, memory=False, syncs=False),
        "+ backward (graph hooks, chosen)": profiled(backward=True, memory=False, syncs=False),
        "+ backward (full backward hooks)": full_backward_hooks,
        "default (backward + memory), steady step": profiled(syncs=False),
        "default, the one step counting memory": profiled(syncs=False, warmup=1),
        "default + sync audit": profiled(syncs=True),
        "torch.profiler (CPU)": torch_profiler,
    }


def overhead_table(quick: bool, stress: bool) -> BenchTable:
    """Overhead of each variant vs the profiler off, interleaved rounds.

    Example:
        >>> list(_variants(nn.Linear(2, 2)))[:4]  # the table's rows (a real call takes seconds)
        ['off', 'forward only', '+ backward (graph hooks, chosen)', '+ backward (full backward hooks)']
    """
    model, step, label = (_tiny_modules if stress else transformer_train_step)(quick)
    variants = _variants(model)
    rounds = 3 if quick else (12 if stress else 10)
    for _ in range(2):
        step()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for r in range(rounds):
        names = list(variants)
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            gc.collect()  # start every variant from the same heap (no garbage of the last one)
            times[name].append(variants[name](step))
    off = times.pop("off")
    table = BenchTable(
        f"Profiler overhead: {label}",
        ["variant", "step ms", "overhead % (wall)", "wall q1-q3 %", "overhead % (CPU)",
         "CPU q1-q3 %"],
    )  # fmt: skip
    table.add_row("off", statistics.median(w for w, _ in off), 0.0, "-", 0.0, "-")
    for name, values in times.items():
        walls = [100.0 * (v[0] / o[0] - 1.0) for v, o in zip(values, off)]
        cpus = [100.0 * (v[1] / o[1] - 1.0) for v, o in zip(values, off)]
        table.add_row(
            name,
            statistics.median(w for w, _ in values),
            statistics.median(walls),
            f"{quantile(walls, 0.25):.1f} to {quantile(walls, 0.75):.1f}",
            statistics.median(cpus),
            f"{quantile(cpus, 0.25):.1f} to {quantile(cpus, 0.75):.1f}",
        )
    table.notes.append(
        f"{rounds} interleaved rounds (variant order rotated; every variant, 'off' included, runs "
        "one untimed step before its timed step, after gc.collect()); overhead = median over "
        "rounds of "
        "(variant / off - 1), from wall time and from process CPU time (less sensitive to "
        "other processes on a shared machine); each profiled step includes its prof.step() "
        "bookkeeping"
    )
    table.notes.append(
        "activation memory is counted on the first profiled step only (saved-tensor hooks are "
        "pushed for that step alone): 'steady step' is every other step"
    )
    table.notes.append(
        "torch.profiler is timed inside an active profile() context (its per-event recording), "
        "not counting the trace export"
    )
    return table


def accuracy_table(quick: bool) -> BenchTable:
    """Attributed forward time per module vs the module timed alone on its captured inputs.

    Example:
        >>> table = accuracy_table(quick=True)
        >>> table.columns, len(table.rows) > 0
        (['module', 'type', 'profiler ms', 'alone ms', 'error %'], True)
    """
    model, step, label = transformer_train_step(quick)
    session = torchdoctor.profile(step, model=model, steps=3 if quick else 8, warmup=2, syncs=False,
                                  history=False)  # a benchmark, not a run to remember
    wanted = {}
    for node, _ in walk(session["tree"]):
        if node["kind"] == "module" and not node["children"] and node["calls_per_step"] == 1.0:
            per_call = node["forward_ms"]["median"]
            if quick or per_call >= 1.0:
                wanted[node["path"]] = per_call
    modules = dict(model.named_modules())
    captured: dict[str, tuple[tuple, dict]] = {}

    def same(value: Any) -> Any:  # a leaf copy that requires grad like the original
        if torch.is_tensor(value):
            return value.detach().requires_grad_(value.requires_grad)
        return value

    def capture(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if path not in captured:
                captured[path] = (
                    tuple(same(a) for a in args),
                    {k: same(v) for k, v in kwargs.items()},
                )

        return hook

    handles = [
        modules[p].register_forward_pre_hook(capture(p), with_kwargs=True)
        for p in wanted
        if p in modules
    ]
    step()
    for handle in handles:
        handle.remove()
    table = BenchTable(
        f"Per-module forward time: profiler vs module alone ({label})",
        ["module", "type", "profiler ms", "alone ms", "error %"],
    )
    repeats = 3 if quick else 15
    errors = []
    for path, attributed in sorted(wanted.items(), key=lambda kv: -kv[1])[:12]:
        module, inputs = modules[path], captured.get(path)
        if inputs is None:
            continue
        args, kwargs = inputs
        module(*args, **kwargs)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            output = module(*args, **kwargs)
            samples.append((time.perf_counter_ns() - start) / 1e6)
            del (
                output
            )  # freeing the graph is not part of the forward (in a step, backward frees it)
        alone = statistics.median(samples)
        error = 100.0 * (attributed - alone) / alone if alone > 0 else 0.0
        errors.append(abs(error))
        table.add_row(path, type(module).__name__, attributed, alone, error)
    if errors:
        table.notes.append(
            f"median |error| {statistics.median(errors):.1f}% over {len(errors)} modules "
            f"({'all leaf modules' if quick else 'leaf modules >= 1 ms'}, largest 12 shown)"
        )
    return table


def no_op_table(quick: bool) -> BenchTable:
    """Per-call cost of region/step with no active profiler.

    Example:
        >>> table = no_op_table(quick=True)
        >>> len(table.rows) > 0
        True
    """
    n = 20_000 if quick else 200_000

    def per_call(fn: Callable[[], None]) -> float:
        start = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - start) / n

    def empty() -> None:
        for _ in range(n):
            pass

    def with_region() -> None:
        region = torchdoctor.region
        for _ in range(n):
            with region("x"):
                pass

    def null() -> None:
        context = contextlib.nullcontext()
        for _ in range(n):
            with context:
                pass

    def steps() -> None:
        mark = torchdoctor.step
        for _ in range(n):
            mark()

    @torchdoctor.region("decorated")
    def decorated() -> None:
        return None

    def plain() -> None:
        return None

    def call_decorated() -> None:
        for _ in range(n):
            decorated()

    def call_plain() -> None:
        for _ in range(n):
            plain()

    table = BenchTable(
        "Markers with no active profiler (ns per call, loop overhead subtracted)",
        ["marker", "ns per call"],
    )
    best = {name: min(per_call(fn) for _ in range(3)) for name, fn in
            [("empty", empty), ("null", null), ("region", with_region), ("step", steps),
             ("decorated", call_decorated), ("plain", call_plain)]}  # fmt: skip
    table.add_row("with contextlib.nullcontext(): pass (reference)", best["null"] - best["empty"])
    table.add_row('with torchdoctor.region("x"): pass', best["region"] - best["empty"])
    table.add_row("torchdoctor.step()", best["step"] - best["empty"])
    table.add_row(
        "@torchdoctor.region function call (vs plain call)", best["decorated"] - best["plain"]
    )
    table.notes.append(f"best of 3 runs of {n:,} calls")
    return table


def run(quick: bool = False) -> list[BenchTable]:
    """All profiler benchmark tables (quick: tiny sizes, few rounds), on one intra-op thread.

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("profiler"))["profiler_overhead"] is run  # `torchdoctor bench profiler` runs it
        True
    """
    torch.manual_seed(0)
    with intra_op_threads(1):
        tables = [
            overhead_table(quick, stress=False),
            overhead_table(quick, stress=True),
            accuracy_table(quick),
            no_op_table(quick),
        ]
    tables[0].notes.append(
        "run with torch.set_num_threads(1): on a shared 2-core machine two intra-op threads "
        "oversubscribe the cores and a step took ~100x longer; with more threads a step is "
        "faster and the same (single-threaded, Python) hook cost is a larger fraction"
    )
    return tables
