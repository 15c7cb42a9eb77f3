"""Cross-file data-dependent shapes: a helper file whose only sign of masks is ``.any(0)``."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))


ASSIGN = """
    import torch
    def assign(gt, pred, centers):
        inside = (centers[None] - gt[:, None, :2]).abs().amax(-1) < gt[:, None, 2:3]
        cand = inside.any(0)
        cost = torch.cdist(gt[:, :2], pred[cand][:, :2])
        return cand, cost.argmin(0)
"""

HEAD = """
    import torch.nn as nn
    from assign import assign
    class Head(nn.Module):
        def forward(self, feats, gt, centers):
            pred = self.conv(feats).flatten(1).T
            return self.losses(pred, gt, centers)
        def losses(self, pred, gt, centers):
            cand, matched = assign(gt, pred, centers)
            return (pred[:, 0] * cand).sum() + matched.float().sum()
"""

TRAIN = """
    from head import Head
    def main(loader, opt):
        model = Head().cuda()
        for feats, gt, centers in loader:
            model(feats.cuda(), gt.cuda(), centers.cuda()).backward()
            opt.step()
"""


def test_a_mask_selection_in_a_helper_file_a_forward_reaches_is_reported(tmp_path: Path) -> None:
    # YOLOX's SimOTA: forward -> self.get_losses -> assign.simota_assign, a file with no
    # forward, no backward and no literal `[mask]`: linted all the same
    _write(tmp_path, {"assign.py": ASSIGN, "head.py": HEAD, "train.py": TRAIN})
    found = [(Path(f.path).name, f.line, f.message) for f in lint_paths([tmp_path], select=["TD207"])]
    assert [(name, line) for name, line, _ in found] == [("assign.py", 6)]
    assert "in `assign` (called by `Head.forward`" in found[0][2]


def test_the_same_helper_is_silent_when_nothing_moves_to_cuda(tmp_path: Path) -> None:
    _write(tmp_path, {"assign.py": ASSIGN, "head.py": HEAD,
                      "train.py": TRAIN.replace(".cuda()", "")})  # fmt: skip
    assert lint_paths([tmp_path], select=["TD207"]) == []
