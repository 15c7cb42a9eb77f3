"""TD404 one call below a loop over a loader kept on ``self``; TD501 on a module held in a dict
of modules; TD511 in a loop inside forward; TD602 for a model handed to an evaluation function
under a name that does not say model."""

import torch
import torch.nn as nn
from torch.utils.data import DataLoader


class Scorer(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 1)

    def forward(self, feats, boxes):
        total = 0.0
        for weight in (1.0, 0.5, 0.25):
            scale = torch.tensor([0.1, 0.1, 0.2, 0.2], device=feats.device)  # expect: TD511
            total = total + weight * (self.head(feats) * (boxes / scale).sum()).mean()
        return total

    def shifted(self, feats, shift):
        for level in range(3):
            feats = feats + torch.tensor([0.5, 0.25], device=feats.device)  # near-miss: no forward
        return feats + shift


class Loop:
    def __init__(self, data, device):
        self.device = device
        self.loader = DataLoader(data, batch_size=32, num_workers=4, pin_memory=True,
                                 persistent_workers=True)
        self.nets = {"backbone": Scorer().to(device), "head": Scorer().to(device)}
        self.state = {"weights": torch.zeros(3)}
        self.opt = torch.optim.SGD(self.nets["backbone"].parameters(), lr=0.1)

    def move(self, batch):
        for name, value in batch.items():
            batch[name] = value.to(self.device)  # expect: TD404
        return batch

    def move_async(self, batch):
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}  # near-miss

    def fit(self):
        for batch in self.loader:
            batch = self.move(batch)
            extra = self.move_async(batch)
            loss = self.nets["backbone"](batch["feats"], extra["boxes"])
            loss.backward()
            self.opt.step()

    @torch.no_grad()
    def export(self):
        backbone = self.nets["backbone"].half()  # expect: TD501
        weights = self.state["weights"].half()  # near-miss: a tensor in a dict, not a module
        return backbone, weights


def evaluate_ranker(ranker, loader, device):
    outs = []
    for feats, boxes in loader:  # expect: TD602
        outs.append(ranker(feats.to(device), boxes.to(device)))
    return outs


def evaluate_plain(fn, loader):
    outs = []
    for x in loader:  # near-miss: handed a plain function, not a module
        outs.append(fn(x))
    return outs


def main(data, device):
    ranker = Scorer().to(device)
    Loop(data, device).fit()
    evaluate_ranker(ranker, data, device)
    evaluate_plain(len, data)
