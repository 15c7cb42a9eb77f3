"""TD7xx fixtures: training loop and distributed training."""

import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP


def wrap(model, rank):
    dp = nn.DataParallel(model)  # expect: TD701
    dp2 = torch.nn.parallel.DataParallel(model, device_ids=[0, 1])  # expect: TD701
    ddp = DDP(model, device_ids=[rank])  # near-miss: the right wrapper
    return dp, dp2, ddp


def train(model, loader, opt, args):
    torch.autograd.set_detect_anomaly(True)  # expect: TD702
    torch.autograd.set_detect_anomaly(args.debug)  # near-miss: a debug flag decides
    if args.debug:
        torch.autograd.set_detect_anomaly(True)  # near-miss: guarded
    with torch.autograd.detect_anomaly():  # expect: TD702
        model(args.x).sum().backward()
    with torch.autograd.profiler.emit_nvtx():  # expect: TD702
        for x in loader:
            model(x).sum().backward()
            opt.step()
    prof = torch.autograd.profiler.profile()  # near-miss: built, not wrapping training
    with torch.autograd.profiler.profile(enabled=args.profile):  # near-miss: a flag
        pass
    torch.autograd.set_detect_anomaly(False)  # near-miss: switched off
    for x, y in loader:
        opt.zero_grad(set_to_none=False)  # expect: TD703
        opt.zero_grad()  # near-miss
        opt.zero_grad(set_to_none=True)  # near-miss
        loss = model(x).sum()
        loss.backward()
        opt.step()
        torch.cuda.empty_cache()  # expect: TD705
        dist.barrier()  # expect: TD707
        if args.step % 1000 == 0:
            torch.cuda.empty_cache()  # near-miss: not every step
            dist.barrier()  # near-miss: not every step
    torch.cuda.empty_cache()  # near-miss: after the loop
    dist.barrier()  # near-miss: after the loop


def fit(model, loader, epochs):
    for epoch in range(epochs):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # expect: TD704
        sched = torch.optim.lr_scheduler.StepLR(opt, 10)  # near-miss: not an optimizer
        for x in loader:
            model(x).sum().backward()
            opt.step()
        sched.step()


def sweep(loader, learning_rates, make_model):
    for lr in learning_rates:
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=lr)  # near-miss: a new model each time
        for x in loader:
            model(x).sum().backward()
            opt.step()


def accumulate(model, loader, opt, accum):
    model = DDP(model)
    for i, x in enumerate(loader):
        loss = model(x).sum() / accum
        loss.backward()  # expect: TD706
        if (i + 1) % accum == 0:
            opt.step()
            opt.zero_grad()


def setup():
    os.environ.setdefault("MASTER_PORT", "29500")


@torch.no_grad()
def evaluate(model, val_loader):
    for x in val_loader:
        model(x)
        torch.cuda.empty_cache()  # expect: TD705
    for name in ["a", "b"]:
        torch.cuda.empty_cache()  # near-miss: not a loop over batches


def train_keeping_history(model, loader, opt, scaler, accelerator):
    total_loss, running = 0.0, 0.0
    history, curve = [], []
    for x, y in loader:
        loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        total_loss += loss  # expect: TD708
        running = running + loss * x.shape[0]  # expect: TD708
        history.append(loss)  # expect: TD708
        curve.append(loss.detach())
        total_loss += loss.item()  # expect: TD201
        with torch.no_grad():
            running += loss
        print(f"{loss}")  # expect: TD201
    for x, y in loader:
        out = model(x)
        accelerator.backward(out.sum())
        curve.append(out.sum())  # expect: TD708
    return total_loss, running, history, curve


def train_accumulating_on_purpose(model, loader, opt, k):
    losses = []
    for i, (x, y) in enumerate(loader):
        loss = model(x, y)
        losses.append(loss)  # differentiated together below
        if len(losses) == k:
            torch.stack(losses).mean().backward()
            opt.step()
            losses = []


class LitModel:
    def training_step(self, batch, batch_idx):
        loss = self.model(batch)
        self.log("train_loss", loss, sync_dist=True)  # expect: TD709
        self.log_dict({"a": loss}, prog_bar=True, sync_dist=True)  # expect: TD709
        self.log("epoch_loss", loss, on_step=False, on_epoch=True, sync_dist=True)  # per epoch
        self.log("rank_loss", loss)  # each rank's own value: no collective
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.model(batch), sync_dist=True)  # validation: per epoch


def train_collecting_garbage(model, loader, val_loader, opt, epochs):
    import gc
    import gc as garbage
    from gc import collect

    for step, (x, y) in enumerate(loader):
        model(x, y).backward()
        opt.step()
        gc.collect()  # expect: TD710
        garbage.collect()  # expect: TD710
        if step % 100 == 0:
            gc.collect()  # near-miss: every 100 steps
    for x in val_loader:
        model(x)
        collect()  # expect: TD710
    for epoch in range(epochs):
        train_one_epoch(model, loader, opt)
        gc.collect()  # near-miss: once per epoch
    gc.collect()  # near-miss: after the loops


def train_multitask(model, loader, optimizer):
    running = {"ce": 0.0, "reg": 0.0}
    for x, y, box in loader:
        out = model(x)
        ce_loss = torch.nn.functional.cross_entropy(out["cls"], y)
        reg_loss = torch.nn.functional.l1_loss(out["box"], box)
        loss = ce_loss + 0.5 * reg_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running["ce"] += ce_loss  # expect: TD708 (a part of the loss keeps the graph too)
        running["reg"] += reg_loss.detach()  # near-miss: detached
    return running


class StepTrainer:
    def run_step(self):
        loss = self.model(next(self.batches))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        torch.cuda.empty_cache()  # expect: TD705 (run_step: a step function)


def train_after_learning_starts(model, loader, opt, learning_starts):
    import gc

    for global_step, (x, y) in enumerate(loader):
        model(x, y).backward()
        opt.step()
        if global_step > learning_starts:
            gc.collect()  # expect: TD710 (true on every step past the warm-up)


class Tagger(LightningModule):
    def training_step(self, batch, batch_idx):
        words, tags = batch
        loss = self.crf(self.emissions(words), tags)
        self.epoch_losses.append(loss)  # expect: TD708
        self.seen_losses.append(loss.detach())  # near-miss: detached
        return loss


def train_with_records(model, loader, optimizer):
    stats, history = [], []
    for epoch_step, (x, y) in enumerate(loader):
        loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        stats.append({"loss": loss, "n": len(x)})  # expect: TD708
        history.append((epoch_step, loss.item()))  # expect: TD201 (a number: no TD708)
    return stats, history


def train_sage(model, loader, opt, distributed, log_every):
    for step, (x, y) in enumerate(loader):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if distributed:
            dist.barrier()  # expect: TD707
        if dist.is_initialized():
            dist.barrier()  # expect: TD707
        if step % log_every == 0 and distributed:
            dist.barrier()  # near-miss: at log steps only


def load_for_eval(args, build):
    # a wrapper made only to load a checkpoint saved with `module.` keys, then unwrapped
    # (princeton-vl/RAFT's demo.py and evaluate.py): it never runs the model
    model = torch.nn.DataParallel(build(args))  # near-miss: loaded, moved, then unwrapped
    model.load_state_dict(torch.load(args.model))
    model.cuda()
    model = model.module
    model.eval()
    scored = nn.DataParallel(build(args))  # near-miss: only its .module is used
    scored.load_state_dict(torch.load(args.model))
    evaluate(scored.module)
    runs = nn.DataParallel(build(args))  # expect: TD701 (the wrapper itself runs)
    runs.load_state_dict(torch.load(args.model))
    out = runs(args.x)
    kept = nn.DataParallel(build(args)).cuda()  # expect: TD701 (not bound by name)
    moved = nn.DataParallel(build(args))  # expect: TD701 (a move's result is the wrapper)
    again = moved.cuda()
    return model, out, kept, again, moved.module
