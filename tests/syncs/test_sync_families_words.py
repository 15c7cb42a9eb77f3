"""A copy to the host is a ``host-op`` (a torchdoctor.ops call runs it on the device) only when
its code names such work: an eigendecomposition, an SVD, an SPD distance as words or name
parts, not letters inside another word (clients round 15: pytorch/examples'
word_language_model/generate.py samples with `word_weights = output[-1]...exp().cpu()`, whose
"weights" contains "eig"; it was told torchdoctor.ops.covariance runs it batched)."""

from __future__ import annotations

from torchdoctor.analyze.advice.ops_table import ops_for
from torchdoctor.analyze.advice.sync_families import family, family_fixes

SAMPLING = {"op": "word_weights = output[-1].squeeze().div(args.temperature).exp().cpu()",
            "kind": "cpu", "file": "/x/word_language_model/generate.py", "function": "<module>",
            "line": 81, "per_step": 1.0}  # fmt: skip


def test_a_weights_tensor_copied_to_the_host_is_no_eigendecomposition():
    assert family(SAMPLING) == "loop"
    (fix,) = family_fixes({family(SAMPLING): [SAMPLING]}, lambda r: f"generate.py:{r['line']}")
    assert "torchdoctor.ops" not in fix


def test_eigen_svd_and_spd_work_is_still_found_by_its_words():
    for code in ("L = torch.linalg.eigh(C).cpu()", "w = torch.linalg.eigvalsh(S)",
                 "U, S, V = torch.svd(x)", "d = spd_distance(a, b)", "EigenDecomposition"):
        assert "torchdoctor.ops.covariance" in ops_for(code), code
    assert family({**SAMPLING, "op": "vals = torch.linalg.eigvalsh(cov).cpu()"}) == "host-op"
