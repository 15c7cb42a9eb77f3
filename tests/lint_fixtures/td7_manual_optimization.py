# Lightning's manual optimisation (a GAN's two optimizers): training_step returns nothing, and
# hands its losses to self.manual_backward. The Trainer still calls it at every step.
import lightning as L
import torch
import torch.nn.functional as F


class GAN(L.LightningModule):
    def __init__(self, G, D):
        super().__init__()
        self.automatic_optimization = False
        self.G, self.D = G, D
        self.g_losses, self.d_losses = [], []

    def training_step(self, real, batch_idx):
        opt_g, opt_d = self.optimizers()
        d_loss = F.softplus(self.D(self.G(real).detach())).mean() + F.softplus(-self.D(real)).mean()
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = F.softplus(-self.D(self.G(real))).mean()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.d_losses.append(d_loss.detach())  # near-miss: detached
        self.log("loss/g", g_loss.detach(), prog_bar=True)  # near-miss: no sync_dist
        self.g_losses.append(g_loss)  # expect: TD708
        torch.cuda.synchronize()  # expect: TD202
        if batch_idx % 100 == 0:
            torch.cuda.synchronize()  # near-miss: every 100 steps

    def on_train_epoch_end(self):
        torch.cuda.synchronize()  # near-miss: once per epoch
        self.log("loss/g_epoch", torch.stack(self.g_losses).mean().detach())
        self.g_losses.clear()
