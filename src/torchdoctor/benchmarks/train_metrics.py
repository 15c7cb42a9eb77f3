"""Seed 002's metric pattern: ``.item()`` on every logged value each step vs ``LazyMetrics``.

A 200-step synthetic training loop of a small VAE (loss, nll, kl logged every step, a progress
postfix every step). The eager variant converts each value with ``.item()`` (3 host syncs per
step); the lazy one keeps running sums on the device and converts them all at once every
``sync_every`` = 50 steps (0 syncs between log points). Both produce the same final metrics.
On a CPU a "sync" costs little (there is no device queue to drain), so the time ratio is close
to 1 there; the sync counts are what carries over to a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torchdoctor.measure import BenchTable, compare, intra_op_threads
from torchdoctor.train.metrics import LazyMetrics
from torchdoctor.train.reference import EagerMetrics

_TRANSFERS = {"item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__"}
LOG_EVERY = 50


class _HostTransfers(TorchFunctionMode):
    """Counts tensor-to-host conversions (each one a host-device sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in _TRANSFERS:
            self.count += 1
        return func(*args, **(kwargs or {}))


class _TinyVAE(nn.Module):
    def __init__(self, dim: int = 32, hidden: int = 64, latent: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, noise: torch.Tensor):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + noise * (0.5 * logvar).exp()
        nll = (self.decoder(z) - x).pow(2).sum(-1).mean()
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1).mean()
        return nll + 0.5 * kl, nll, kl


def _setup(data: torch.Tensor):
    torch.manual_seed(0)
    model = _TinyVAE(data.shape[-1]).to(data.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return model, optimizer


def _step(model, optimizer, x, noise):
    loss, nll, kl = model(x, noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), nll.detach(), kl.detach()


def eager_loop(
    data: torch.Tensor, noise: torch.Tensor, on_step: Callable[[int], None] | None = None
):
    """The "before": ``.item()`` on each logged value every step (seed 002).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> data, noise = torch.randn(3, 4, 32, generator=g), torch.randn(3, 4, 8, generator=g)
        >>> sorted(eager_loop(data, noise))
        ['kl', 'loss', 'nll']
    """
    model, optimizer = _setup(data)
    metrics = EagerMetrics()
    postfix = {}
    for i in range(data.shape[0]):
        loss, nll, kl = _step(model, optimizer, data[i], noise[i])
        metrics.update(loss=loss, nll=nll, kl=kl)  # 3 x .item()
        postfix = {name: f"{value:.4g}" for name, value in metrics.compute().items()}
        if on_step is not None:
            on_step(i)
    del postfix
    return metrics.compute()


def lazy_loop(
    data: torch.Tensor, noise: torch.Tensor, on_step: Callable[[int], None] | None = None
):
    """The "after": ``LazyMetrics``, one conversion for all values every ``LOG_EVERY`` steps.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> data, noise = torch.randn(3, 4, 32, generator=g), torch.randn(3, 4, 8, generator=g)
        >>> eager, lazy = eager_loop(data, noise), lazy_loop(data, noise)
        >>> all(abs(eager[k] - lazy[k]) < 1e-6 for k in eager)  # same values, fewer syncs
        True
    """
    model, optimizer = _setup(data)
    metrics = LazyMetrics(sync_every=LOG_EVERY)
    postfix = {}
    for i in range(data.shape[0]):
        loss, nll, kl = _step(model, optimizer, data[i], noise[i])
        metrics.update(loss=loss, nll=nll, kl=kl)
        if metrics.due:  # every LOG_EVERY steps (and at the first one)
            postfix = metrics.postfix()
        if on_step is not None:
            on_step(i)
    del postfix
    return metrics.compute()


def _syncs_per_step(loop, data, noise) -> list[int]:
    """Host conversions made in each step of one run of ``loop`` (final compute excluded)."""
    counts: list[int] = []
    seen = [0]
    with _HostTransfers() as counter:

        def mark(_step: int) -> None:  # called at the end of each step; no tensor ops
            counts.append(counter.count - seen[0])
            seen[0] = counter.count

        loop(data, noise, mark)
    return counts


def _inputs(steps: int, device: str):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(steps, 128, 32, generator=g).to(device)
    noise = torch.randn(steps, 128, 8, generator=g).to(device)
    return data, noise


def run(quick: bool = False) -> list[BenchTable]:
    """Sync counts and the interleaved time ratio of the two loops, per available device.

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("train"))["train_metrics"] is run  # `torchdoctor bench train` runs it
        True
    """
    with intra_op_threads(1):  # tiny ops: intra-op threads only add contention on a shared box
        return _run(quick)


def _run(quick: bool) -> list[BenchTable]:
    steps = 60 if quick else 200
    repeats = 3 if quick else 10
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    syncs = BenchTable(
        f"train metrics: host syncs in a {steps}-step loop (loss, nll, kl logged every step)",
        ["device", "variant", "syncs per step (between log points)", "log points", "syncs total"],
    )
    timing = BenchTable(
        f"train metrics: {steps}-step loop time, eager .item() vs LazyMetrics (interleaved)",
        ["device", "eager ms", "lazy ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    for device in devices:
        data, noise = _inputs(steps, device)
        for name, loop in (("eager .item()", eager_loop), ("LazyMetrics", lazy_loop)):
            counts = _syncs_per_step(loop, data, noise)
            log_points = [i for i in range(steps) if counts[i] > 0]
            quiet = [c for i, c in enumerate(counts) if i not in log_points] or [0]
            between = max(quiet) if name == "LazyMetrics" else min(counts)
            syncs.add_row(device, name, between, len(log_points), sum(counts))
        result = compare(
            eager_loop,
            lazy_loop,
            data,
            noise,
            repeats=repeats,
            warmup=1,
            rtol=1e-9,
            names=("eager", "lazy"),
        )
        timing.add_row(device, *result.row())
    syncs.notes.append(
        "counted with a TorchFunctionMode on .item/.tolist/.cpu/.numpy/float/int/bool; "
        f"the lazy loop converts at its first step and every {LOG_EVERY} steps after; "
        "both loops convert once more after the last step (epoch summary, not counted)"
    )
    timing.notes.append(
        "verdict compares the final epoch metrics of both loops (same seed): identical losses"
    )
    timing.notes.append(
        "one intra-op thread; "
        "on CPU a host sync is nearly free (no device queue to drain): expect ~1x there; on a "
        "GPU each .item() stalls the host until the queue drains"
    )
    return [syncs, timing]
