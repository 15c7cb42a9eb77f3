"""Shared by the crash-safety tests: run `python -m torchdoctor` on this checkout's sources."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torchdoctor

#: the src/ folder of the torchdoctor under test (the subprocess must import the same one)
SOURCES = str(Path(torchdoctor.__file__).resolve().parents[1])

TRAIN = """\
import sys, time
import torch

net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x = torch.randn(4, 8)
for step in range({steps}):
    opt.zero_grad()
    net(x).sum().backward()
    time.sleep({sleep})
    opt.step()
    print(f"script line {{step}}", flush=True)
print("trained", flush=True)
{tail}
"""


def write_script(folder: Path, *, steps: int, sleep: float, tail: str = "") -> Path:
    """A small training script: ``steps`` optimizer steps of at least ``sleep`` seconds."""
    path = folder / "train_loop.py"
    path.write_text(TRAIN.format(steps=steps, sleep=sleep, tail=tail))
    return path


def command(*args: str) -> list[str]:
    """``python -m torchdoctor ARGS`` for subprocess."""
    return [sys.executable, "-m", "torchdoctor", *args]


def environment(**extra: str) -> dict[str, str]:
    """The environment for the subprocess: this checkout first on the path, unbuffered."""
    path = os.pathsep.join(p for p in (SOURCES, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}
