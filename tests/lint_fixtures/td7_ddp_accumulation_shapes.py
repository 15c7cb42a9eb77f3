# TD706 in the shapes real DDP loops take: the step skipped with `continue` until enough
# micro-batches, a GradScaler named for fp16, backward in both branches of a run-wide setting.
import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel as DDP


def consistency_training(student, loader, opt, scaler, accum):
    model = DDP(student.cuda())
    for it, x in enumerate(loader):
        loss = model(x.cuda(non_blocking=True)).pow(2).mean() / accum
        scaler.scale(loss).backward()  # expect: TD706
        if (it + 1) % accum != 0:
            continue
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()


def dino_epoch(student, loader, opt, fp16_scaler, accum_steps):
    student = DDP(student.cuda())
    for it, images in enumerate(loader):
        loss = student(images.cuda()).mean() / accum_steps
        if fp16_scaler is None:
            loss.backward()  # expect: TD706
            if (it + 1) % accum_steps == 0:
                opt.step()
                opt.zero_grad()
        else:
            fp16_scaler.scale(loss).backward()  # expect: TD706
            if (it + 1) % accum_steps == 0:
                fp16_scaler.step(opt)
                fp16_scaler.update()
                opt.zero_grad()


def with_no_sync(student, loader, opt, accum):
    model = DDP(student.cuda())
    for it, x in enumerate(loader):
        last = (it + 1) % accum == 0
        with contextlib.nullcontext() if last else model.no_sync():
            model(x.cuda()).mean().backward()  # near-miss: no_sync on all but the last
        if not last:
            continue
        opt.step()
        opt.zero_grad()


def every_step(student, loader, opt):
    model = DDP(student.cuda())
    for x in loader:
        model(x.cuda()).mean().backward()  # near-miss: no accumulation
        opt.step()
        opt.zero_grad()


def micro_steps(student, batches, opt, accum):
    model = DDP(student.cuda())
    for step in range(1000):
        for micro in range(accum):
            model(next(batches).cuda()).mean().backward()  # expect: TD706
        opt.step()
        opt.zero_grad()


def micro_steps_nanogpt(student, batches, opt, grad_accum_steps):
    model = DDP(student.cuda())
    for step in range(1000):
        for micro in range(grad_accum_steps):
            model.require_backward_grad_sync = micro == grad_accum_steps - 1
            model(next(batches).cuda()).mean().backward()  # near-miss: synced on the last only
        opt.step()
        opt.zero_grad()


CFG = {"accum": 4}


def micro_steps_config_dict(student, batches, opt):
    model = DDP(student.cuda())
    for step in range(1000):
        for micro in range(CFG["accum"]):  # (the count read from a config dict)
            model(next(batches).cuda()).mean().backward()  # expect: TD706
        opt.step()
        opt.zero_grad()


def micro_batches_by_chunk(student, loader, opt, n_micro):
    model = DDP(student.cuda())
    for batch in loader:
        for i, part in enumerate(batch.cuda().chunk(n_micro)):
            model(part).mean().backward()  # expect: TD706
        opt.step()
        opt.zero_grad()


def two_optimizers_inner_steps(critic, gen, batches, c_opt, g_opt):
    critic, gen = DDP(critic.cuda()), DDP(gen.cuda())
    for step in range(1000):
        for _ in range(5):
            critic(next(batches).cuda()).mean().backward()  # near-miss: stepped each time
            c_opt.step()
            c_opt.zero_grad()
        gen(next(batches).cuda()).mean().backward()
        g_opt.step()
        g_opt.zero_grad()


def bpr_sgd_accumulated(net, loader, lr, accum):
    model = DDP(net.cuda())
    for k, (u, i, j) in enumerate(loader):
        (model(u, i, j) / accum).backward()  # expect: TD706 (a hand-written SGD step after the gate)
        if (k + 1) % accum:
            continue
        with torch.no_grad():
            for p in model.parameters():  # expect: TD305
                p.add_(p.grad, alpha=-lr)
                p.grad = None


def bpr_sgd_every_batch(net, loader, lr, every):
    model = DDP(net.cuda())
    for k, (u, i, j) in enumerate(loader):
        model(u, i, j).backward()  # near-miss: the hand-written step runs every batch
        with torch.no_grad():
            for p in model.parameters():  # expect: TD305
                p.add_(p.grad, alpha=-lr)
        if k % every == 0:
            for p in model.parameters():  # expect: TD305
                p.grad.zero_()
