"""TD513: a module with parameters built in forward or in every training step."""
import torch
import torch.nn as nn


class Projected(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)  # in __init__: no finding
        self.expand = True

    def forward(self, x):
        if x.shape[-1] != self.dim:
            proj = nn.Linear(x.shape[-1], self.dim, device=x.device)  # expect: TD513
            x = proj(x)
        scale = nn.Parameter(torch.ones(self.dim))  # expect: TD513
        act = nn.ReLU()  # no parameters: no finding
        if self.expand:
            bigger = nn.Embedding(10, self.dim)  # stored on the object: a one-time build
            self.table = bigger
            self.expand = False
        return act(self.norm(x) * scale)


def train(model, loader, opt):
    for x, y in loader:
        head = nn.Linear(16, 4)  # expect: TD513
        loss = nn.functional.cross_entropy(head(model(x)), y)
        loss.backward()
        opt.step()


def check_devices(model, opt):
    for device in ["cpu", "meta"]:  # a loop over configurations: no finding
        layer = nn.Linear(4, 4)
        model(layer.weight).sum().backward()
        opt.step()


class Regressor(nn.Module):  # (a LightningModule's training_step runs every step)
    def training_step(self, batch, batch_idx):
        feats = self.backbone(batch[0])
        feats = nn.LayerNorm(feats.shape[-1])(feats)  # expect: TD513
        return self.head(feats).mean()

    def configure_optimizers(self):
        return torch.optim.AdamW(nn.Linear(2, 2).parameters())  # built once: no finding


def train_step(model, batch, optimizer):
    scale = nn.Parameter(torch.ones(4))  # expect: TD513 (a training step function)
    loss = (model(batch[0]) * scale).sum()
    loss.backward()
    optimizer.step()


class DividedSpaceTime(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.temporal_fc = None

    def forward(self, x):
        self.temporal_fc = nn.Linear(self.dim, self.dim, device=x.device)  # expect: TD513
        return x + self.temporal_fc(x)


class LazyHead(nn.Module):
    def forward(self, x):
        if self.head is None:
            self.head = nn.Linear(x.shape[-1], 10).to(x.device)  # near-miss: built once, lazily
        return self.head(x)
