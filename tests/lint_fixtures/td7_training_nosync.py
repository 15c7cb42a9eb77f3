"""Near-misses only: correct DDP accumulation with no_sync, guarded debug flags, SDPA."""

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel


def accumulate(model, loader, opt, accum, args):
    model = DistributedDataParallel(model)
    if args.detect_anomaly:
        torch.autograd.set_detect_anomaly(True)
    for i, x in enumerate(loader):
        last = (i + 1) % accum == 0
        ctx = contextlib.nullcontext() if last else model.no_sync()
        with ctx:
            loss = model(x).sum() / accum
            loss.backward()
        if last:
            opt.step()
            opt.zero_grad(set_to_none=True)
        noise = torch.randn(4, 8, device=x.device)
        model(noise)


def attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
