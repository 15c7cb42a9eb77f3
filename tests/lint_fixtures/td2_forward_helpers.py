"""TD205 one call deep: a module-level helper that a module's forward calls reads tensors on
every call (DETR's generalized_box_iou, whose asserts read box tensors, in its matcher)."""

import builtins

import torch
import torch.nn as nn


def generalized_box_iou(boxes1, boxes2):
    assert (boxes1[:, 2:] >= boxes1[:, :2]).all()  # expect: TD205
    assert (boxes2[..., 2:] >= boxes2[..., :2]).all()  # expect: TD205
    assert boxes1.dim() == 2  # near-miss: a Python int
    return boxes1 @ boxes2.T


def count_positives(mask):
    return int(mask.sum().item())  # expect: TD205


def oks(pred, gt, areas, scale):
    assert (areas > 0).all(), "instances need an area"  # expect: TD205 (a parameter: a tensor)
    assert (scale > 0), "a positive scale"  # near-miss: a bare comparison may be of numbers
    return ((pred - gt) ** 2).sum(-1) / (areas * scale)


def checked_area(boxes):  # near-miss: no forward calls it
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    return boxes.prod(-1)


def postprocess_boxes(boxes):  # near-miss: post-processing turns outputs into Python
    return boxes.tolist()


def shortest(a, b):
    return float(builtins.min(a, b))  # near-miss: Python's min of Python numbers


class HungarianMatcher(nn.Module):
    @torch.no_grad()
    def forward(self, outputs, targets):
        cost = -generalized_box_iou(outputs, targets)
        n = count_positives(cost > 0)
        return cost[:n], postprocess_boxes(outputs), shortest(1, 2), oks(outputs, targets, n, 2)


class Deterministic(nn.Module):
    def forward(self, x):
        if torch.are_deterministic_algorithms_enabled():  # near-miss: a Python bool
            x = x.clone()
        return x.interpolate(x) if hasattr(x, "interpolate") else x


class FastFocalLoss(torch.nn.Module):
    def forward(self, out, target, mask):
        num_pos = mask.sum()
        loss = (torch.log(out) * target).sum()
        if num_pos == 0:  # expect: TD205
            return -loss
        return -loss / num_pos


class SparseDispatcher(object):
    """davidmrau/mixture-of-experts: a plain object the MoE's forward builds every call."""

    def __init__(self, num_experts, gates):
        self._gates = gates
        self._part_sizes = (gates > 0).sum(0).tolist()  # expect: TD205

    def dispatch(self, inp):
        return torch.split(inp, self._part_sizes, dim=0)

    def describe(self):
        return self._gates.sum().item()  # near-miss: no forward calls describe()


class MoE(nn.Module):
    def __init__(self, experts):
        super().__init__()
        self.experts = experts

    def forward(self, x, gates):
        dispatcher = SparseDispatcher(len(self.experts), gates)
        return [e(xi) for e, xi in zip(self.experts, dispatcher.dispatch(x))]
