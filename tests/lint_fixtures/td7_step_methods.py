"""Training steps run one call away: a trainer's step method, a framework's per-step hooks."""
import torch


class Trainer:
    def __init__(self, model, loader, opt):
        self.model, self.loader, self.opt = model, loader, opt

    def train_step(self, batch):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        self.opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        if norm.isfinite():  # expect: TD201
            self.opt.step()
        return loss.detach()

    def fit(self, epochs):
        for _ in range(epochs):
            for it, batch in enumerate(self.loader):
                loss = self.train_step(batch)  # the step itself: no TD712 for it
                if torch.isnan(loss):  # expect: TD201
                    break
                if it % 100 == 0:
                    print(loss)


class LitClassifier:
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        print("loss", loss.item())  # expect: TD201
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        torch.cuda.empty_cache()  # expect: TD705

    def on_train_epoch_end(self):
        torch.cuda.empty_cache()  # once an epoch: no finding
