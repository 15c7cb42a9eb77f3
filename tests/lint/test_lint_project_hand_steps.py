"""A training loop whose update is a project function stepping the parameters by hand (DP-SGD:
per-example gradients by torch.func, clipped, noised and applied in ``noisy_step`` of another
file), and whose physical batches are a loader built from the loop's own logical batch."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths

PRIVACY = """
    import torch

    @torch.no_grad()
    def noisy_step(model, summed, sigma, lr):
        offset = 0
        for p in model.parameters():
            g = summed[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            p.add_(g + sigma * torch.randn_like(p), alpha=-lr)

    @torch.no_grad()
    def ema_update(ema, model, decay):
        for e, p in zip(ema.parameters(), model.parameters()):
            e.mul_(decay).add_(p, alpha=1 - decay)
"""

TRAIN = """
    import torch
    from torch.utils.data import DataLoader, Subset
    from privacy import ema_update, noisy_step

    def train(model, train, batches, grads, device):
        for idx in batches:
            loader = DataLoader(Subset(train, idx), batch_size=256)
            summed = 0
            for x, y in loader:
                summed = summed + grads(model, x.to(device), y.to(device))
            noisy_step(model, summed, 1.0, 0.1)
            frac = (summed > 1).float().mean().item()
            torch.save(model.state_dict(), "last.pt")

    def average(model, ema, train, batches, device):
        for idx in batches:
            loader = DataLoader(Subset(train, idx), batch_size=256)
            for x, y in loader:
                model(x.to(device))
            ema_update(ema, model, 0.999)
            gap = (ema.weight - model.weight).abs().max().item()
            torch.save(ema.state_dict(), "ema.pt")

    def epochs(model, opt, train, n, device):
        for epoch in range(n):
            loader = DataLoader(train, batch_size=256)
            for x, y in loader:
                model(x.to(device)).sum().backward()
                opt.step()
            torch.save(model.state_dict(), "epoch.pt")
"""


def _found(tmp_path: Path) -> list[tuple[int, str]]:
    (tmp_path / "privacy.py").write_text(textwrap.dedent(PRIVACY))
    (tmp_path / "train.py").write_text(textwrap.dedent(TRAIN))
    found = lint_paths([tmp_path], select=["TD201", "TD711"])
    return sorted((f.line, f.code) for f in found if Path(f.path).name == "train.py")


def test_a_loop_stepping_by_an_imported_hand_written_update_trains(tmp_path: Path) -> None:
    found = _found(tmp_path)
    assert (13, "TD201") in found  # the clipped fraction read every noisy step
    assert (14, "TD711") in found  # the loader is this step's physical batches: no epoch loop


def test_an_ema_helper_and_an_epoch_checkpoint_stay_silent(tmp_path: Path) -> None:
    found = _found(tmp_path)
    assert [f for f in found if 16 <= f[0] <= 23] == []  # an EMA (positive weight) is no step
    assert [f for f in found if f[0] >= 25] == []  # a loader of the whole set: an epoch's save
