# TD305 fixtures: per-parameter in-place updates in a Python loop.
import torch
import torch.nn as nn


def ema_update(ema, model, decay):
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters()):  # expect: TD305
            pe.mul_(decay).add_(p, alpha=1 - decay)


def ema_lerp(ema, model, decay):
    for pe, p in zip(ema.parameters(), model.parameters()):  # expect: TD305
        pe.data.lerp_(p.data, 1 - decay)


def sgd(model, lr):
    for p in model.parameters():  # expect: TD305
        if p.grad is None:
            continue
        p.data.add_(p.grad, alpha=-lr)


def sgd_augmented(model, lr):
    for name, p in model.named_parameters():  # expect: TD305
        p.data -= lr * p.grad


def grouped(optimizer):
    for group in optimizer.param_groups:
        for p in group["params"]:  # expect: TD305
            d_p = p.grad
            p.data.add_(d_p, alpha=-group["lr"])


def manual_zero_grad(model):
    params = list(model.parameters())
    for p in params:  # expect: TD305
        if p.grad is not None:
            p.grad.zero_()


def soft_update(target, online, tau):
    for tp, p in zip(target.parameters(), online.parameters()):  # expect: TD305
        tp.data.copy_(tau * p.data + (1 - tau) * tp.data)


def swa_average(swa_model, model, n):
    for ps, p in zip(swa_model.state_dict().values(), model.state_dict().values()):  # expect: TD305
        ps.mul_(n / (n + 1)).add_(p / (n + 1))


# ---- near misses: these lines stay silent ----------------------------------------------------
def foreach_ema(ema, model, decay):
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def count(model):
    total = 0
    for p in model.parameters():  # reads only
        total += p.numel()
    return total


def freeze(model):
    for p in model.parameters():  # not arithmetic
        p.requires_grad_(False)
    for p in model.parameters():  # an attribute, not a tensor op
        p.requires_grad = False


def load_weights(model, source):
    for p, q in zip(model.parameters(), source.parameters()):  # a plain copy: once
        p.data.copy_(q.data)


class Net(nn.Module):
    def _init_weights(self):
        for p in self.parameters():  # initialisation runs once
            p.data.mul_(0.1)

    def reset_parameters(self):
        for p in self.parameters():  # initialisation runs once
            p.data.zero_()

    def rescale(self):
        for p in self.parameters():  # an nn.init call: initialisation
            nn.init.normal_(p)
            p.data.mul_(0.02)


def decay_by_name(model, lr, wd):
    for name, p in model.named_parameters():  # a per-parameter decision on the name
        if "bias" in name:
            p.data.add_(p.grad, alpha=-lr)
        else:
            p.data.add_(p.grad + wd * p.data, alpha=-lr)


def averaged(model, accelerator):
    for p in model.parameters():  # a collective per parameter, not arithmetic to batch
        torch.distributed.all_reduce(p.grad)
        p.grad.div_(accelerator.num_processes)


def fallback(ema_params, params, decay):
    if hasattr(torch, "_foreach_lerp_"):
        torch._foreach_lerp_(ema_params, params, 1 - decay)
    else:
        for pe, p in zip(ema_params, params):  # the fallback of a foreach branch
            pe.lerp_(p, 1 - decay)


def norms(model):
    for p in model.parameters():  # reads only: printing
        print(p.grad.norm())


def follow(slow_params, live_params, keep):
    for mine, theirs in zip(slow_params, live_params):  # expect: TD305
        mine.detach().mul_(keep).add_(theirs, alpha=1 - keep)


def zero_out(module):
    for p in module.parameters():  # zeroes the weights: a builder, not a step
        p.detach().zero_()


def scaled(module, scale):
    for p in module.parameters():  # returns the module it changed: a builder
        p.detach().mul_(scale)
    return module


def test_ema_follows(model):
    for p in model.parameters():  # a test perturbs the weights once
        p.add_(0.25)


def tune(config_params):
    for p in config_params:  # not tensors: no in-place arithmetic
        print(p)


class Momentum:
    def momentum_update_key_encoder(self):
        for q, k in zip(self.query.parameters(), self.key.parameters()):  # expect: TD305
            k.data = k.data * self.m + q.data * (1.0 - self.m)


def perturb(module):
    with torch.no_grad():
        for parameter in module.parameters():  # scaled by a literal: a one-off perturbation
            parameter.mul_(1.5)


def fine_tune(model, support_x, support_y, inner_steps, inner_lr):
    for _ in range(inner_steps):
        loss = torch.nn.functional.cross_entropy(model(support_x), support_y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for name, p in model.named_parameters():  # expect: TD305 (returns the model, but steps it)
                if p.grad is not None:
                    p.add_(p.grad, alpha=-inner_lr)
    return model


class ModelEMA:  # YOLOv5's utils/torch_utils.py
    @torch.no_grad()
    def update(self, model, d):
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():  # expect: TD305 (integer buffers filtered)
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)

    def load(self, model):
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():  # near-miss: loads the weights once
            v.copy_(msd[k])


class EvolutionStrategy:
    def sync_policy(self, step_size=1.0):
        i = 0
        with torch.no_grad():
            for p in self.policy.parameters():  # expect: TD305
                n = p.numel()
                p.mul_(1 - step_size).add_(self.theta[i:i + n].view_as(p), alpha=step_size)
                i += n


def test(backbone, episodes, steps, lr):
    """An evaluation script's fine-tuning per episode (named `test`, no pytest test)."""
    for x_s, y_s in episodes:
        head = torch.nn.Linear(backbone(x_s).shape[1], 5)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(head(backbone(x_s)), y_s)
            head.zero_grad()
            loss.backward()
            with torch.no_grad():
                for prm in head.parameters():  # expect: TD305
                    prm.sub_(lr * prm.grad)


@torch.no_grad()
def fedavg_server(global_model, states, weights, server_lr):
    total = sum(weights)
    for name, gp in global_model.named_parameters():  # expect: TD305
        avg = sum(w / total * sd[name].to(gp.device) for sd, w in zip(states, weights))
        gp.mul_(1 - server_lr).add_(avg, alpha=server_lr)
    for name, gp in global_model.named_parameters():  # near-miss: one client's weights loaded as they are
        gp.copy_(states[0][name])


@torch.no_grad()
def sparse_adagrad_step(model, state, lr):
    for name, p in model.named_parameters():  # expect: TD305 (its own state looked up per parameter)
        if p.grad is None:
            continue
        s = state.setdefault(name, torch.zeros_like(p))
        s.add_(p.grad * p.grad)
        p.addcdiv_(p.grad, s.sqrt().add_(1e-10), value=-lr)


def restore_from(model, backups):
    for name, p in model.named_parameters():
        p.copy_(backups.get(name))  # near-miss: a plain copy of a saved tensor, once


class LitEMA:  # a LightningModule's EMA over the weights it trains, kept in lists
    def __init__(self, unet, decay=0.9999):
        self.trainable = [p for n, p in unet.named_parameters() if n.startswith("ctrl")]
        self.ema = [p.detach().clone() for p in self.trainable]
        self.stats = [torch.zeros(3) for _ in range(4)]
        self.decay = decay

    def on_train_batch_end(self, outputs, batch, batch_idx):
        with torch.no_grad():
            for e, p in zip(self.ema, self.trainable):  # expect: TD305
                e.lerp_(p, 1 - self.decay)

    def on_validation_batch_end(self, x):
        for s in self.stats:
            s.mul_(0.5).add_(x)  # near-miss: running statistics, no parameters
