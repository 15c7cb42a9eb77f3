"""TD201: TensorBoard's add_scalars reads every tensor of the dict it is given (the Attentive
Neural Process's training loop logs {'loss': loss, 'kl': kl.mean()} at every step)."""
import torch


def train(model, optim, loader, writer):
    step = 0
    for context_x, context_y, target_x, target_y in loader:
        y_pred, kl, loss = model(context_x.cuda(), context_y.cuda(), target_x.cuda(), target_y.cuda())
        optim.zero_grad()
        loss.backward()
        optim.step()
        writer.add_scalars("training_loss", {"loss": loss, "kl": kl.mean()}, step)  # expect: TD201
        writer.add_scalars("schedule", {"lr": optim.param_groups[0]["lr"], "step": step}, step)  # near-miss: Python numbers
        if step % 100 == 0:
            writer.add_scalars("val", {"loss": loss}, step)  # near-miss: every 100 steps
        step += 1
