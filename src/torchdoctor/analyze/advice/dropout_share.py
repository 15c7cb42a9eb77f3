"""Rule ``dropout``: the model's ``nn.Dropout`` modules take a sizable share of a training step.

In training, each dropout draws a random mask the size of its input (``bernoulli_``) and
multiplies by it, in forward and again in backward. On a CPU the random draws dominate: a tiny
T5 fine-tune under the Seq2Seq Trainer spent 23 of its 92 ms in ``bernoulli_``, and with
``dropout_rate=0`` the step went from 100 to 61 ms; BERT and minGPT show the same. Spread over
a dozen small modules, no single one is dominant, so the tree's per-module advice never names
it. The rule adds up every module whose class is a dropout (``Dropout``, ``Dropout1d/2d/3d``,
``AlphaDropout``, ``FeatureAlphaDropout``) and advises when they are at least
:data:`THRESHOLD` of the step. The saving is their measured time (all of it if dropout goes,
a stated range down to half for a lower ``p``); whether quality allows it is the user's call.

Example:
    >>> drop = {"kind": "module", "path": "enc.drop", "type": "Dropout",
    ...         "total_ms": {"median": 30.0}, "forward_ms": {"median": 12.0}, "children": []}
    >>> tree = {"kind": "root", "path": "", "total_ms": {"median": 100.0}, "children": [drop]}
    >>> [a.rule for a in dropout_share({"step_ms": {"median": 100.0}, "tree": tree})]
    ['dropout']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, center, fmt_ms, pct, tree_step_ms
from torchdoctor.session_read import node_ms, walk

#: the dropout modules must take at least this share of the step
THRESHOLD = 0.10
#: module classes that draw a random mask per call in training
DROPOUT_TYPES = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                           "FeatureAlphaDropout"})  # fmt: skip


def dropout_share(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when the dropout modules add up to >= THRESHOLD of the step (see the module
    docstring)."""
    tree, step = session.get("tree"), tree_step_ms(session)
    if not tree or step <= 0:
        return []
    found = [n for n, _ in walk(tree) if str(n.get("type") or "") in DROPOUT_TYPES
             and n.get("kind", "module") == "module"]  # fmt: skip
    ms = sum(node_ms(n) for n in found)
    if ms < THRESHOLD * step:
        return []
    forward = sum(center(n.get("forward_ms")) for n in found)
    backward = max(0.0, ms - forward)
    heaviest = max(found, key=node_ms)
    return [
        Advice(
            rule="dropout",
            title=f"dropout takes {pct(ms, step):.0f}% of the step: its random masks, one per "
            "activation, forward and backward",
            confidence="medium",
            evidence=[
                f"{len(found)} dropout modules: {fmt_ms(ms)} per step ({pct(ms, step):.0f}%), "
                f"forward {fmt_ms(forward)}, backward {fmt_ms(backward)}",
                f"the heaviest: {heaviest.get('path')} ({fmt_ms(node_ms(heaviest))})",
                "each draws a mask the size of its input (bernoulli_) in training; spread over "
                "many small modules, none dominates the tree on its own",
            ],
            fix="If the recipe allows, lower the dropout probability or set it to 0 (many "
            "pretraining and fine-tuning recipes for large models do; check quality on your "
            "validation set); torch.compile fuses the masks with the ops around them; on a GPU "
            "the draws cost less than on a CPU.",
            code="config.dropout_rate = 0.0  # Hugging Face configs: dropout, hidden_dropout_prob, "
            "attention_probs_dropout_prob ...",
            references=["torch.nn.Dropout", "torch.compile"],
            estimated_saving_ms=ms,
            saving_range_ms=(ms / 2, ms),
            heat=min(1.0, ms / step),
            cause="dropout",
        )
    ]
