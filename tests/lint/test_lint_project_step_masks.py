"""TD207 in methods a training step runs through an object of another file: a Lightning step's
``self.model.loss(...)``, a training loop's ``gaussians.add_densification_stats(...)``, and
masks that show only by their names (``update_filter``, ``render_pkg["visibility_filter"]``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths

MODEL = """
    import torch
    import torch.nn as nn

    class TrajDiffusion(nn.Module):
        def context(self, obs, mask):
            return self.encoder(obs, mask)[mask]

        def loss(self, obs, fut, mask):
            return (self.denoiser(fut) - self.context(obs, mask)).pow(2).mean()

        def report(self, obs, valid_mask):
            return obs[valid_mask].mean()
"""

LIT = """
    import lightning as L
    from model import TrajDiffusion

    class LitTraj(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = TrajDiffusion()

        def training_step(self, batch, batch_idx):
            obs, fut, mask = batch
            return self.model.loss(obs, fut, mask)

    def main(loader):
        L.Trainer(accelerator="gpu").fit(LitTraj(), loader)
"""

GAUSSIANS = """
    import torch

    class GaussianModel:
        def add_densification_stats(self, grads, update_filter):
            self.accum[update_filter] += torch.norm(grads[update_filter, :2], dim=-1, keepdim=True)

        def prune_points(self, prune_filter):
            return self.xyz[prune_filter]

        def gather(self, rows_filter):
            return self.xyz[rows_filter]
"""

TRAIN = """
    import torch
    from gaussian_model import GaussianModel

    def training(cams, opt, iterations, render):
        gaussians = GaussianModel()
        for iteration in range(iterations):
            render_pkg = render(cams[iteration % len(cams)], gaussians)
            radii, visibility_filter = render_pkg["radii"], render_pkg["visibility_filter"]
            render_pkg["render"].cuda().mean().backward()
            with torch.no_grad():
                gaussians.max_radii2D[visibility_filter] = radii[visibility_filter]
                gaussians.add_densification_stats(render_pkg["points"].grad, visibility_filter)
                if iteration % 100 == 0:
                    gaussians.prune_points(gaussians.opacity < 0.005)
                gaussians.gather(torch.randperm(gaussians.n)[:10])
            opt.step()
"""


def _lint(tmp_path: Path, files: dict[str, str]) -> list[tuple[str, int]]:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD207"])]


def test_a_method_a_lightning_step_runs_through_its_model_attribute(tmp_path: Path) -> None:
    """The LightningModule's training_step calls self.model.loss, which runs context: its
    `[mask]` runs every step. A method no step calls stays silent."""
    found = _lint(tmp_path, {"model.py": MODEL, "lit.py": LIT})
    assert found == [("model.py", 7)]


def test_masks_named_filter_in_a_plain_class_the_loop_calls_every_step(tmp_path: Path) -> None:
    """3DGS: the loop writes through render_pkg["visibility_filter"] and hands it to
    add_densification_stats every iteration. A method called only every 100 steps, and a
    *_filter handed integer indices (rows of a permutation), stay silent."""
    found = _lint(tmp_path, {"gaussian_model.py": GAUSSIANS, "train.py": TRAIN})
    assert found == [("gaussian_model.py", 6), ("train.py", 12)]


HELPERS = """
    import torch

    def missing_mask(y):
        return ~torch.isnan(y)

    def first_k(y, k):
        return torch.argsort(y.flatten())[:k]

    def soft_weight(y):
        return (~torch.isnan(y)).float()
"""

LOSSES = """
    import torch
    import torch.nn.functional as F
    from helpers import first_k, missing_mask, soft_weight

    def pad_mask(lengths, n):
        return torch.arange(n, device=lengths.device)[None] < lengths[:, None]

    def masked_mse(pred, target, lengths):
        mask = missing_mask(target)
        keep = pad_mask(lengths, pred.shape[1])
        rows = first_k(target, 8)
        w = soft_weight(target)
        loss = F.mse_loss(pred[mask], target[mask])
        loss = loss + pred[keep].mean()
        return loss + pred.flatten()[rows].sum() + (pred * w).sum()

    def train(model, loader, opt):
        for x, y, n in loader:
            x, y = x.cuda(), y.cuda()
            loss = masked_mse(model(x), y, n)
            loss.backward()
            opt.step()
"""


def test_masks_returned_by_the_projects_helpers(tmp_path: Path) -> None:
    """`mask = missing_mask(target)` (another file's function returning `~torch.isnan(y)`)
    and `pad_mask(...)` (this file's, returning a comparison) are masks: indexing by them in
    the loss the CUDA loop runs is TD207. A helper returning sorted indices, or a float weight,
    is not a mask."""
    found = _lint(tmp_path, {"helpers.py": HELPERS, "losses.py": LOSSES})
    assert found == [("losses.py", 14), ("losses.py", 15)]


RPN = """
    import torch.nn.functional as F

    def select_cls_loss(logp, label, value):
        idx = (label == value).nonzero().squeeze(1)
        return F.nll_loss(logp.index_select(0, idx), label.index_select(0, idx))

    def rpn_losses(logp, label):
        return select_cls_loss(logp, label, 1) + select_cls_loss(logp, label, 0)

    def positives_for_report(logp, label):
        return logp[label == 1].mean()

    def report(logp, label):
        return positives_for_report(logp, label)
"""

RPN_TRAIN = """
    from rpn import report, rpn_losses

    def train(model, loader, opt):
        for x, label in loader:
            logp = model(x.cuda())
            loss = rpn_losses(logp, label.cuda())
            loss.backward()
            opt.step()
        return report(logp, label)
"""


def test_a_helper_of_the_loss_a_training_loop_calls(tmp_path: Path) -> None:
    """SiamRPN: the loop calls rpn_losses, which calls select_cls_loss, whose `.nonzero()`
    runs every step (one caller up, through the file's call index). A helper whose caller
    runs only after the loop stays silent."""
    found = _lint(tmp_path, {"rpn.py": RPN, "train.py": RPN_TRAIN})
    assert found == [("rpn.py", 5)]


def test_a_bare_builtin_call_in_a_loop_is_no_call_of_a_project_function_of_that_name():
    """torch's own source: `sum(i for i in range(n))` in a DDP test's training loop was taken
    for torch/masked/_ops.py's `sum`, and one caller up its helper's `torch.unique` was 'called
    every training step'. Imported or defined in the loop's file, the name is the project's."""
    from torchdoctor.lint.project import Project

    ops = "import torch\ndef sum(x):\n    return torch.unique(x)\n"
    loop = ("import torch\nfor b in loader:\n    loss = model(b) / sum(i for i in range(4))\n"
            "    loss.backward()\n    opt.step()\n")  # fmt: skip
    project = Project([])
    project.add("masked_ops.py", ops)
    project.add("train.py", loop)
    assert project.called_in_loop("sum", training=True) is None
    imported = Project([])
    imported.add("masked_ops.py", ops)
    imported.add("train.py", "from masked_ops import sum\n" + loop)
    assert imported.called_in_loop("sum", training=True) == ("train.py", 4)
