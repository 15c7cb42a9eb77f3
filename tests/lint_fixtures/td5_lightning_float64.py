# TD505 in a LightningModule trained on a GPU: training_step is a training step (Lightning runs
# its backward and the optimizer), and so is a loss function it calls.
import math

import lightning.pytorch as pl
import torch


def gaussian_nll(z, logdet):
    z64 = z.double()  # expect: TD505
    log_pz = -0.5 * (z64**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
    return -(log_pz + logdet).mean().float()


def load_stats(raw):
    return raw.double().mean(0).float()  # near-miss: once, before training


class Flow(pl.LightningModule):
    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def training_step(self, batch, batch_idx):
        x = batch.double()  # expect: TD505
        z, logdet = self.flow(x.float())
        return gaussian_nll(z, logdet)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters())


def main(loader, flow):
    stats = load_stats(torch.randn(10, 4))
    trainer = pl.Trainer(accelerator="gpu", max_epochs=1)
    trainer.fit(Flow(flow), loader)
    return stats
