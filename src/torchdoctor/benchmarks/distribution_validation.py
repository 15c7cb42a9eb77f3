"""torch.distributions' argument validation, forward only: a policy's per-action distribution
built and scored with ``validate_args=True`` (the default outside ``python -O``) against
``False`` (the torch-syncs remedy).

Suite 'fused''s ``distribution_pair`` times the same with a backward pass, which validation
does not touch; an RL rollout builds one distribution per action with no backward until the
update (pytorch/examples' actor_critic: a Categorical over 2 actions, sampled and scored per
environment step), so the forward's ratio is the one its lines see.

Example:
    >>> [row[0] for row in run(quick=True)[0].rows][:1]
    ['Categorical(probs), 2 actions']
"""

from __future__ import annotations

import torch

from torchdoctor.measure import BenchTable, compare

#: (case, distribution, input shape)
CASES = (
    ("Categorical(probs), 2 actions", "categorical", (2,)),
    ("Categorical(probs), 4 x 6 actions", "categorical", (4, 6)),
    ("Normal, 1 x 2 actions", "normal", (1, 2)),
    ("Normal, 256 x 6 actions", "normal", (256, 6)),
)


def scored(kind: str, validate: bool):
    """A distribution of ``kind`` built from the input and scored at a fixed action.

    Example:
        >>> x = torch.randn(3)
        >>> torch.equal(scored("categorical", True)(x), scored("categorical", False)(x))
        True
    """
    from torch.distributions import Categorical, Normal

    def score(x: torch.Tensor) -> torch.Tensor:
        if kind == "categorical":
            d = Categorical(probs=torch.softmax(x, -1), validate_args=validate)
            return d.log_prob(x.argmax(-1))
        d = Normal(x, x.exp(), validate_args=validate)
        return d.log_prob(x.detach()).sum(-1)

    return score


def run(quick: bool = False) -> list[BenchTable]:
    """Validation on against off, forward only, per case (interleaved pairs).

    Example:
        >>> run(quick=True)[0].columns[1:3]
        ['validated ms', 'unvalidated ms']
    """
    torch.manual_seed(0)
    table = BenchTable(
        "torch.distributions argument validation, forward only: validate_args=True vs False "
        "(interleaved, median of per-pair ratios)",
        ["case", "validated ms", "unvalidated ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    for name, kind, shape in CASES[:1] if quick else CASES:
        x = torch.randn(*shape)
        result = compare(scored(kind, True), scored(kind, False), x, repeats=5 if quick else 200,
                         names=("validated", "unvalidated"))  # fmt: skip
        table.add_row(name, *result.row())
    table.notes.append(
        "each call builds the distribution and scores one action (log_prob), no backward; "
        f"{torch.get_num_threads()} intra-op thread(s), CPU"
    )
    return [table]
