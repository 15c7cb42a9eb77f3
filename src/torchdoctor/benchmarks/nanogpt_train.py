"""A nanoGPT-style training script on synthetic data, the workload of ``run_overhead.py``.

Shaped like nanoGPT's train.py: the model from a file beside it (``_gpt.py``, loaded by path as
nanoGPT loads its model.py: the script imports nothing of torchdoctor), batches cut from a
token array at random offsets (``get_batch``), a warm-up + cosine learning rate, gradient
accumulation over micro-steps, gradient clipping, AdamW, a loss logged with ``.item()`` every
few iterations and a periodic evaluation under ``torch.no_grad()``. Run it as a script::

    python nanogpt_train.py --iters 200
    torchdoctor run nanogpt_train.py --iters 200

Example:
    >>> main(["--iters", "2", "--grad-accum", "1", "--log-interval", "1", "--eval-iters", "1"])
    step 0: train loss 5.5..., val loss 5.5...
    iter 0: loss 5.5...
    iter 1: loss 5.5...
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import torch


def _load_model_module():
    spec = importlib.util.spec_from_file_location("model", Path(__file__).with_name("_gpt.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("model", module)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    """Train for ``--iters`` iterations and print the losses (see the module docstring).

    Example:
        >>> main(["--iters", "1", "--layers", "1", "--width", "32", "--block", "16", "--grad-accum", "1",
        ...       "--eval-iters", "1", "--log-interval", "1"])
        step 0: train loss 5.56..., val loss 5.56...
        iter 0: loss 5.55...
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--eval-iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(1337)
    model_module = _load_model_module()
    config = model_module.GPTConfig(
        block_size=args.block, n_layer=args.layers, n_head=4, n_embd=args.width
    )
    model = model_module.GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(0)
    data = {
        "train": rng.integers(0, config.vocab_size, 50_000, dtype=np.uint16),
        "val": rng.integers(0, config.vocab_size, 5_000, dtype=np.uint16),
    }

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = data[split]
        ix = torch.randint(len(tokens) - args.block - 1, (args.batch,))
        x = torch.stack([torch.from_numpy(tokens[i : i + args.block].astype(np.int64)) for i in ix])
        y = torch.stack(
            [torch.from_numpy(tokens[i + 1 : i + 1 + args.block].astype(np.int64)) for i in ix]
        )
        return x, y

    def get_lr(it: int, warmup: int = 20, max_lr: float = 6e-4, min_lr: float = 6e-5) -> float:
        if it < warmup:
            return max_lr * (it + 1) / (warmup + 1)
        ratio = (it - warmup) / max(1, args.iters - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(ratio, 1.0))) * (max_lr - min_lr)

    @torch.no_grad()
    def estimate_loss() -> dict[str, float]:
        out = {}
        model.eval()
        for split in ("train", "val"):
            losses = torch.zeros(args.eval_iters)
            for k in range(args.eval_iters):
                x, y = get_batch(split)
                _, loss = model(x, y)
                losses[k] = loss.item()
            out[split] = losses.mean().item()
        model.train()
        return out

    for it in range(args.iters):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it)
        if it % args.eval_interval == 0:
            losses = estimate_loss()
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        for _ in range(args.grad_accum):
            x, y = get_batch("train")
            _, loss = model(x, y)
            loss = loss / args.grad_accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if it % args.log_interval == 0:
            print(f"iter {it}: loss {loss.item() * args.grad_accum:.4f}")


if __name__ == "__main__":
    main()
