# A loader over a dataset made for the test split (Gestures(root, "test"), split="test") is
# iterated once by an evaluation script: its workers start once whatever persistent_workers
# says. The training split iterated every epoch respawns them, and so does the test split when
# the function walks it once per epoch.
import torch
from torch.utils.data import DataLoader


@torch.no_grad()
def evaluate(model, root, Gestures):
    loader = DataLoader(Gestures(root, "test", 16), batch_size=32, num_workers=4, pin_memory=True)  # near-miss: one pass
    for x, _ in loader:
        model(x.cuda(non_blocking=True))


@torch.no_grad()
def evaluate_by_keyword(model, root, Gestures):
    loader = DataLoader(Gestures(root, split="test"), batch_size=32, num_workers=4, pin_memory=True)  # near-miss: one pass
    return [model(x.cuda(non_blocking=True)) for x, _ in loader]


def train(model, opt, root, Gestures, epochs):
    loader = DataLoader(Gestures(root, "train", 16), batch_size=32, num_workers=4, pin_memory=True)  # expect: TD403
    held_out = DataLoader(Gestures(root, "test", 16), batch_size=32, num_workers=4, pin_memory=True)  # expect: TD403
    for _ in range(epochs):
        for x, _ in loader:
            model(x.cuda(non_blocking=True)).sum().backward()
            opt.step()
        for x, _ in held_out:
            model(x.cuda(non_blocking=True))


def fit(trainer, lit, root, Gestures):
    train = DataLoader(Gestures(root, "train"), batch_size=32, num_workers=8, pin_memory=True, persistent_workers=True)
    val = DataLoader(Gestures(root, "test"), batch_size=1, num_workers=2, pin_memory=True)  # expect: TD403
    trainer.fit(lit, train, val)  # (the trainer validates on it every epoch)
