"""Autofixes of the training-loop rules: exact output, idempotence, equivalence on CPU."""

from __future__ import annotations

import textwrap

import torch

from torchdoctor.lint import fix_source, lint_source


def test_zero_grad_fix_drops_set_to_none_false() -> None:
    src = "def step(opt):\n    opt.zero_grad(set_to_none=False)\n"
    assert fix_source(src) == "def step(opt):\n    opt.zero_grad()\n"
    commented = "def step(opt):\n    opt.zero_grad(\n        set_to_none=False  # keep\n    )\n"
    assert fix_source(commented) == commented  # a comment would be lost: not fixable


def test_conv_bias_fix_adds_bias_false_and_the_model_still_runs() -> None:
    src = textwrap.dedent(
        """
        import torch.nn as nn
        def stem():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=True,), nn.BatchNorm2d(4))
        """
    )
    fixed = fix_source(src)
    assert "nn.Conv2d(3, 4, 3, bias=False)" in fixed
    assert "nn.Conv2d(4, 4, 1, bias=False,)" in fixed
    assert fix_source(fixed) == fixed and lint_source(fixed) == []
    scope: dict = {}
    exec(compile(fixed, "fixed", "exec"), scope)
    model = scope["stem"]()
    assert model[0].bias is None and model(torch.randn(2, 3, 8, 8)).shape == (2, 4, 6, 6)


def test_host_factory_fix_moves_the_device_into_the_call() -> None:
    src = textwrap.dedent(
        """
        import torch
        def run(loader, device):
            for x in loader:
                a = torch.randn(4, 8).to(device)
                b = torch.zeros(x.shape[0], dtype=torch.bool).to(device=device)
                c = torch.ones(3).cuda()
                d = torch.ones(3).to(device, non_blocking=True)
        """
    )
    fixed = fix_source(src)
    assert "a = torch.randn(4, 8, device=device)" in fixed
    assert "b = torch.zeros(x.shape[0], dtype=torch.bool, device=device)" in fixed
    assert 'c = torch.ones(3, device="cuda")' in fixed
    assert "d = torch.ones(3).to(device, non_blocking=True)" in fixed  # extra options: kept
    compile(fixed, "fixed", "exec")
    cpu_only = "\n".join(line for line in fixed.splitlines() if "cuda" not in line) + "\n"
    scope: dict = {}
    exec(compile(cpu_only, "fixed", "exec"), scope)
    scope["run"]([torch.zeros(2)], torch.device("cpu"))
