# A forward's truth test of a reduction of a comparison it made (fg = labels > 0; if fg.sum() ==
# 0:) reads a tensor on the host when the compared name is a tensor: a forward argument, or
# unpacked from the module's own helper or a submodule (Mask R-CNN's ROI heads sample their
# proposals' labels, then return early without foreground). A comparison of a NumPy array made
# from the config is no tensor.
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ROIHeads(nn.Module):
    def __init__(self, c, num_classes, widths=(7, 14)):
        super().__init__()
        self.cls = nn.Linear(c, num_classes)
        self.widths = list(widths)

    def sample(self, feats, labels):
        keep = torch.randperm(len(labels), device=labels.device)[:128]
        return feats[keep], labels[keep]

    def forward(self, feats, labels):
        feats, labels = self.sample(feats, labels)
        logits = self.cls(feats)
        fg = labels > 0
        if fg.sum() == 0:  # expect: TD205
            return F.cross_entropy(logits, labels)
        widths = np.asarray(self.widths)
        wide = widths > 8
        if wide.sum() == 0:  # near-miss: a NumPy array of the config's widths
            return F.cross_entropy(logits, labels) * 2
        return F.cross_entropy(logits, labels, weight=None)


class SoftTargetLoss(nn.Module):
    def forward(self, logits, targets):
        pos = targets > 0
        if pos.sum() == 0:  # expect: TD205
            return logits.sum() * 0
        return F.binary_cross_entropy_with_logits(logits, pos.float())
