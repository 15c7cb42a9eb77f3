# TD602 and Lightning: its Trainer runs validation_step / test_step / predict_step without
# autograd, so a loop over augmentations there needs no no_grad; a method of its own does.
import lightning as L
import torch


class SegModel(L.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def validation_step(self, batch, batch_idx):
        image, mask = batch
        logits = torch.zeros_like(self.net(image))
        for flip_dims in ([], [-1], [-2]):  # near-miss: the Trainer turned autograd off
            x = image.flip(flip_dims) if flip_dims else image
            out = self.net(x)
            logits += out.flip(flip_dims) if flip_dims else out
        self.log("val_loss", torch.nn.functional.cross_entropy(logits / 3, mask))

    def evaluate_flips(self, loader):
        scores = []
        for image, mask in loader:  # expect: TD602 (called by the user, not by the Trainer)
            scores.append(self.net(image).argmax(1).eq(mask).float().mean())
        return torch.stack(scores).mean()
