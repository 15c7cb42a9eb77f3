"""TD201 through a module-level lambda a training loop calls every step (dreamerv3-torch's
``to_np = lambda x: x.detach().cpu().numpy()``), read like the same ``def``."""
import torch

to_np = lambda x: x.detach().cpu().numpy()  # expect: TD201
detached = lambda x: x.detach()
to_host = lambda x: x.detach().cpu().numpy()


def train(model, opt, loader, log_every, history):
    for step, (x, y) in enumerate(loader):
        loss = torch.nn.functional.mse_loss(model(x.cuda()), y.cuda())
        loss.backward()
        opt.step()
        history.append({"loss": to_np(loss), "kept": detached(loss)})  # (detached: no read)
        if step % log_every == 0:
            print(to_host(loss))  # near-miss: under the logging gate
