"""Autofixes: exact expected output, idempotence, and runtime equivalence of the remap fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from torchdoctor.lint import fix_source, lint_source

FIXTURES = Path(__file__).resolve().parents[1] / "lint_fixtures"


def test_fix_matches_expected_output() -> None:
    before = (FIXTURES / "fix_cases.py").read_text()
    after = fix_source(before)
    assert after == (FIXTURES / "fix_cases.py.fixed").read_text()
    compile(after, "fixed.py", "exec")
    assert fix_source(after) == after  # idempotent
    left = [(f.code, f.fixable) for f in lint_source(after)]
    assert left == [("TD502", False), ("TD302", False)]


def test_noqa_blocks_the_fix() -> None:
    src = "import torch\ns = torch.cuda.amp.GradScaler()  # noqa: TD504\n"
    assert fix_source(src) == src


def test_select_limits_fixes() -> None:
    src = "import torch\ns = torch.cuda.amp.GradScaler()\na = torch.cuda.amp.autocast()\n"
    out = fix_source(src, select=["TD503"])
    assert "torch.cuda.amp.GradScaler()" in out and 'torch.amp.autocast("cuda")' in out


REMAP = textwrap.dedent(
    """
    import torch

    def remap(labels):
        unique_labels = torch.unique(labels)
        y = torch.zeros_like(labels)
        for idx, label in enumerate(unique_labels):
            y[labels == label] = idx
        return unique_labels, y
    """
)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float32])
@pytest.mark.parametrize("zeros_dtype", ["", ", dtype=torch.long"])
def test_remap_fix_is_equivalent(dtype: torch.dtype, zeros_dtype: str) -> None:
    source = REMAP.replace("zeros_like(labels)", f"zeros_like(labels{zeros_dtype})")
    fixed = fix_source(source)
    assert "return_inverse=True" in fixed and "for " not in fixed
    assert (".to(labels.dtype)" in fixed) == (not zeros_dtype)
    slow, fast = {}, {}
    exec(compile(source, "slow", "exec"), slow)
    exec(compile(fixed, "fast", "exec"), fast)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(3, 40, (5, 17), generator=gen).to(dtype) * 7
    u_slow, y_slow = slow["remap"](labels)
    u_fast, y_fast = fast["remap"](labels)
    assert torch.equal(u_slow, u_fast)
    assert y_fast.dtype == y_slow.dtype and torch.equal(y_slow, y_fast)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_deprecation_fixes_construct_equivalent_objects() -> None:
    src = (
        "import torch\n"
        "s = torch.cuda.amp.GradScaler(1024.0, 3.0, enabled=False)\n"
        "a = torch.cpu.amp.autocast(True, torch.bfloat16)\n"
    )
    before, after = {}, {}
    exec(compile(src, "b", "exec"), before)
    fixed = fix_source(src)
    assert "torch.cuda.amp" not in fixed and "torch.cpu.amp" not in fixed
    exec(compile(fixed, "a", "exec"), after)
    assert before["s"].state_dict() == after["s"].state_dict()
    for attr in ("device", "fast_dtype", "_enabled"):
        assert getattr(before["a"], attr) == getattr(after["a"], attr)


def test_td506_fixes_a_conv_only_where_every_norm_it_may_feed_is_batch_norm() -> None:
    # RAFT's extractor: conv1 made once, norm1 BatchNorm or GroupNorm / identity by norm_fn
    src = textwrap.dedent(
        """
        import torch.nn as nn
        class Block(nn.Module):
            def __init__(self, c, norm_fn):
                super().__init__()
                self.conv1 = nn.Conv2d(c, c, 3, padding=1)
                if norm_fn == "batch":
                    self.norm1 = nn.BatchNorm2d(c)
                else:
                    self.norm1 = nn.Sequential()
            def forward(self, x):
                return self.norm1(self.conv1(x))
        """
    )
    [finding] = lint_source(src)
    assert finding.code == "TD506" and not finding.fixable and "same switch" in finding.message
    assert fix_source(src) == src
    only_batch = src.replace("nn.Sequential()", "nn.BatchNorm2d(c, momentum=0.01)")
    [finding] = lint_source(only_batch)
    assert finding.fixable and "bias=False" in fix_source(only_batch)
