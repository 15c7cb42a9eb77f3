"""TD706 per function: one function's correct no_sync() does not excuse another's; a helper of
the file that returns the no_sync context does."""

import contextlib

from torch.nn.parallel import DistributedDataParallel as DDP


def train_nosync(model, loader, opt, accum):
    model = DDP(model)
    for i, x in enumerate(loader):
        last = (i + 1) % accum == 0
        with contextlib.nullcontext() if last else model.no_sync():
            (model(x).sum() / accum).backward()  # near-miss: no_sync in this function
        if last:
            opt.step()


def train_plain(model, loader, opt, accum):
    model = DDP(model)
    for i, x in enumerate(loader):
        (model(x).sum() / accum).backward()  # expect: TD706
        if (i + 1) % accum == 0:
            opt.step()


class Trainer:
    def _sync_context(self, last):
        return contextlib.nullcontext() if last else self.model.no_sync()

    def fit(self, loader, accum):
        self.model = DDP(self.model)
        for i, x in enumerate(loader):
            with self._sync_context((i + 1) % accum == 0):
                self.model(x).sum().backward()  # near-miss: the helper's no_sync
            if (i + 1) % accum == 0:
                self.optimizer.step()
