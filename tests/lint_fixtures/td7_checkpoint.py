"""TD711 a checkpoint written on every training step."""

import torch
import torch.distributed as dist
from accelerate import Accelerator


def every_batch(model, loader, opt, path):
    for x, y in loader:
        loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        torch.save(model.state_dict(), path)  # expect: TD711
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)  # expect: TD711


def while_steps(model, stream, optimizer, max_steps, out_dir):
    step = 0
    while step < max_steps:
        model(next(stream)).mean().backward()
        optimizer.step()
        model.save_pretrained(out_dir)  # expect: TD711
        step += 1


def accelerate_loop(accelerator, model, loader, optimizer, out_dir):
    for batch in loader:
        accelerator.backward(model(batch).loss)
        optimizer.step()
        accelerator.save_state(out_dir)  # expect: TD711
        accelerator.save(model.state_dict(), out_dir)  # expect: TD711


def fabric_loop(fabric, model, loader, optimizer, trainer):
    for batch in loader:
        fabric.backward(model(batch))
        optimizer.step()
        fabric.save("last.ckpt", {"model": model})  # expect: TD711
        trainer.save_checkpoint("last.ckpt")  # expect: TD711


def rank_only(model, loader, opt, rank, args):
    for x in loader:
        model(x).sum().backward()
        opt.step()
        if rank == 0:
            torch.save(model.state_dict(), "last.pt")  # expect: TD711
        if args.local_rank in [-1, 0] and dist.get_rank() == 0:
            torch.save(model.state_dict(), "last.pt")  # expect: TD711


def helper_saves(model, loader, opt, utils, save_on_master, accelerator):
    for x in loader:
        model(x).sum().backward()
        opt.step()
        utils.save_on_master(model.state_dict(), "ckpt.pt")  # expect: TD711
        save_on_master(model.state_dict(), "ckpt.pt")  # expect: TD711
        utils.save_checkpoint(model, "ckpt.pt")  # near-miss: a project helper that may gate
        if accelerator.sync_gradients:
            accelerator.save_state("out")  # expect: TD711 (sync_gradients: every optimizer step)


def gradient_accumulation(model, batches, opt, accum_steps, max_iters):
    for it in range(max_iters):
        for micro in range(accum_steps):
            model(batches[it][micro]).sum().backward()
        opt.step()
        torch.save(model.state_dict(), "ckpt.pt")  # expect: TD711


def gated(model, loader, opt, args, best, history):
    for step, x in enumerate(loader):
        loss = model(x).sum()
        loss.backward()
        opt.step()
        if step % args.save_every == 0:
            torch.save(model.state_dict(), "ckpt.pt")  # near-miss: every N steps
        if history[-1] < best:
            torch.save(model.state_dict(), "best.pt")  # near-miss: when it improves
        if rank_zero() and step % 500 == 0:
            torch.save(model.state_dict(), "ckpt.pt")  # near-miss: rank and step
        if step == len(loader) - 1:
            torch.save(model.state_dict(), "last.pt")  # near-miss: the last step
        path = "a.pt" if step % 2 else None
        _ = torch.save(model.state_dict(), path) if path else None  # near-miss: conditional
        if (step + 1) % args.save_every:
            continue
        torch.save(model.state_dict(), "ckpt.pt")  # near-miss: skipped by the continue above


def full_batch(model, features, labels, opt, epochs):
    for epoch in range(epochs):  # no inner loop over batches: each epoch is one step
        model(features, labels).backward()
        opt.step()
        torch.save(model.state_dict(), "ckpt.pt")  # expect: TD711


def rank_zero():
    return not dist.is_initialized() or dist.get_rank() == 0


def per_epoch(model, loader, opt, epochs):
    for epoch in range(epochs):
        for x in loader:
            model(x).sum().backward()
            opt.step()
        opt.step()
        torch.save(model.state_dict(), f"epoch{epoch}.pt")  # near-miss: once per epoch
    torch.save(model.state_dict(), "final.pt")  # near-miss: after training


def epoch_with_train_function(model, loader, opt, epochs, train_one_epoch):
    for epoch in range(epochs):
        train_one_epoch(model, loader, opt)
        torch.save(model.state_dict(), "ckpt.pt")  # near-miss: the loop does not train


@torch.no_grad()
def inference_dump(model, loader):
    for i, x in enumerate(loader):
        out = model(x)
        torch.save(out, f"pred_{i}.pt")  # near-miss: no backward, no optimizer step


def other_saves(model, loader, opt, env, image, np):
    for x in loader:
        model(x).sum().backward()
        opt.step()
        env.save_state()  # near-miss: not a checkpointing framework
        image.save("sample.png")  # near-miss: an image
        np.save("x.npy", x)  # near-miss: not torch.save


class Runner:
    def save_checkpoint(self, step):
        if step % 1000 != 0:
            return
        torch.save(self.model.state_dict(), "ckpt.pt")  # near-miss: outside a loop

    def write(self, path):
        torch.save(self.model.state_dict(), path)  # near-miss: outside a loop

    def fit(self, loader, opt):
        for step, x in enumerate(loader):
            self.model(x).sum().backward()
            opt.step()
            self.save_checkpoint(step)  # near-miss: the method decides when to save
            self.write_checkpoint()  # near-miss: unknown method


class Trainer:
    def save_checkpoint(self, path):
        torch.save(self.model.state_dict(), path)  # near-miss: outside a loop

    def fit(self, loader, opt):
        for x in loader:
            self.model(x).sum().backward()
            opt.step()
            self.save_checkpoint("last.pt")  # expect: TD711


class LitModel:
    def training_step(self, batch, batch_idx):
        loss = self(batch).sum()
        torch.save(self.state_dict(), "last.pt")  # expect: TD711
        return loss


class LitGated:
    def training_step(self, batch, batch_idx):
        loss = self(batch).sum()
        if batch_idx % 100:
            return loss
        torch.save(self.state_dict(), "last.pt")  # near-miss: the return above skips it
        return loss

    def validation_step(self, batch, batch_idx):
        torch.save(self.state_dict(), "val.pt")  # near-miss: not a training step


def train_with_accelerate(accelerator, model, optimizer, loader, output_dir):
    for step, batch in enumerate(loader):
        with accelerator.accumulate(model):
            accelerator.backward(model(**batch).loss)
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:  # (true at every optimizer step)
            accelerator.save_state(output_dir)  # expect: TD711
        if accelerator.sync_gradients and step % 500 == 0:
            accelerator.save_state(output_dir)  # every 500 steps: no finding


def rlhf(trainer, loader, dist, out, log_every):
    for step, (prompt_ids, prompt_mask) in enumerate(loader):
        stats = trainer.step(prompt_ids.cuda(), prompt_mask.cuda())  # (TRL: the PPO update)
        if dist.get_rank() == 0:
            trainer.policy.save_pretrained(out)  # expect: TD711 (a rank guard, not an interval)
        if step % log_every == 0 and dist.get_rank() == 0:
            trainer.policy.save_pretrained(out + "/periodic")  # near-miss: every log_every steps


def save_progress(text_encoder, token_id, path):
    learned = text_encoder.get_input_embeddings().weight[token_id]
    torch.save({"token": learned.detach().cpu()}, path)


def save_sometimes(model, path, step):
    if step % 100 == 0:
        torch.save(model.state_dict(), path)


def train_inversion(text_encoder, model, loader, opt, token_id):
    for step, batch in enumerate(loader):
        model(batch).backward()
        opt.step()
        save_progress(text_encoder, token_id, "latest.bin")  # expect: TD711
        save_sometimes(model, "ckpt.pt", step)  # near-miss: the helper saves every 100 steps


def accumulate_then_save(model, loader, opt, args, rank):
    for i, batch in enumerate(loader):
        (model(batch).sum() / args.accum).backward()
        if (i + 1) % args.accum:
            continue
        opt.step()
        opt.zero_grad()
        if rank == 0:
            model.save_pretrained(args.out)  # expect: TD711 (the continue skips micro-batches)


def accumulate_sgd_then_save(model, loader, lr, accum):
    for k, batch in enumerate(loader):
        (model(batch).sum() / accum).backward()
        if (k + 1) % accum:
            continue
        with torch.no_grad():
            for p in model.parameters():  # expect: TD305
                p -= lr * p.grad
        torch.save(model.state_dict(), "latest.pt")  # expect: TD711 (after a hand-written step)


def zero_then_continue(model, loader, every):
    for k, batch in enumerate(loader):
        model(batch).sum().backward()
        if k % every:
            continue
        for p in model.parameters():  # expect: TD305
            p.grad.zero_()
        torch.save(model.state_dict(), "every.pt")  # near-miss: zeroing gradients is no step; saved every N


def accelerator_by_another_name(model, loader, optimizer, out_dir, acc_history):
    acc = Accelerator(mixed_precision="fp16")  # (a ControlNet script's name for it)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    for step, batch in enumerate(loader):
        acc.backward(model(**batch).loss)
        optimizer.step()
        optimizer.zero_grad()
        if acc.sync_gradients:
            acc.save_state(out_dir)  # expect: TD711 (an Accelerator, named acc)
            if step % 1000 == 0:
                acc.save_state(out_dir)  # near-miss: every 1000 steps
        acc_history.save(out_dir)  # near-miss: not bound to an Accelerator in this file
