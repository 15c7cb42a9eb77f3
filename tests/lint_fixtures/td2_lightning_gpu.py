"""TD207 in a LightningModule whose Trainer runs on the GPU (accelerator='gpu'): the Trainer
moves the batches, no .cuda() in sight."""

import lightning as L
import torch
import torch.nn.functional as F


class Segmenter(L.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        img, mask = batch
        logits = self.net(img)
        valid = mask != 255
        pix = logits.argmax(1)[valid]  # expect: TD207
        loss = F.cross_entropy(logits, mask, ignore_index=255)
        self.log("train/acc", (pix == mask[valid]).float().mean())  # expect: TD207
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def main(net, loader):
    trainer = L.Trainer(accelerator="gpu", devices=1, max_epochs=10)
    trainer.fit(Segmenter(net), loader)
