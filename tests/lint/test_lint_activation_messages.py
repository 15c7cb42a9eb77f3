"""TD508's message says what the fused kernel saves where the hand-written form is told."""

from __future__ import annotations

from torchdoctor.lint import lint_source


def test_td508_log_of_a_sigmoid_kept_for_another_use_claims_no_saved_kernels() -> None:
    """Glow's affine coupling keeps ``s = sigmoid(h)`` for ``out_b`` and takes ``log(s)`` for
    the log-determinant: F.logsigmoid saves the log's kernel only, its stability is the gain."""
    glow = (
        "import torch\ndef couple(h, in_b, t):\n    s = torch.sigmoid(h + 2)\n"
        "    out_b = (in_b + t) * s\n    return out_b, torch.log(s).sum(1)\n"
    )
    (finding,) = lint_source(glow)
    assert finding.code == "TD508" and finding.line == 5
    assert "kept for `out_b = (in_b + t) * s`" in finding.message and "stable" in finding.message
    assert "without the elementwise passes" not in finding.message
    alone = "import torch\ndef ls(h):\n    s = torch.sigmoid(h)\n    return torch.log(s)\n"
    (finding,) = lint_source(alone)
    assert "without the elementwise passes" in finding.message and "kept for" not in finding.message
