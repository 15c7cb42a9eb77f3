"""The cure of a Jacobian or Hessian built one output at a time (lint TD104).

``torch.autograd.functional.jacobian`` / ``hessian`` run one backward pass per output element
unless ``vectorize=True`` batches them with vmap. A hot line making such a call is cured by
that flag (or ``torch.func.jacrev`` / ``torch.func.hessian``): measured in BENCHMARKS.md
(suite ``fused``, ``jacobian_rows``), the gain grows with the number of outputs.

Example:
    >>> JACOBIAN_ROWS.references[0], JACOBIAN_ROWS.speedup.low > 1
    ('TD104', True)
"""

from __future__ import annotations

from torchdoctor.analyze.advice.base import Speedup
from torchdoctor.analyze.advice.cure import Cure

JACOBIAN_ROWS = Cure(
    "vectorized_jacobian",
    "pass vectorize=True: one batched pass, not one per output",
    "torch.autograd.functional.jacobian / hessian run one backward pass per output element "
    "by default (vectorize=False): pass vectorize=True so vmap batches them into one, or use "
    "torch.func.jacrev / torch.func.hessian. A function vmap cannot batch (data-dependent "
    "Python control flow, .item()) raises: keep the loop there.",
    Speedup(
        3.58,
        11.57,
        "BENCHMARKS.md suite 'fused' jacobian_rows (CPU, interleaved): a 16 -> 64 -> 16 tanh "
        "MLP's Hessian 3.58x, its Jacobian 4.22x; at 64 outputs 9.47x and 11.57x",
    ),
    ("TD104", "torch.autograd.functional.jacobian"),
    "J = torch.autograd.functional.jacobian(f, x)                  # before: a pass per output\n"
    "J = torch.autograd.functional.jacobian(f, x, vectorize=True)  # after: one batched pass",
)
