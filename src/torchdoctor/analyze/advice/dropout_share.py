"""Rule ``dropout``: the model's ``nn.Dropout`` modules take a sizable share of a training step.

In training, each dropout draws a random mask the size of its input (``bernoulli_``) and
multiplies by it, in forward and again in backward. On a CPU the random draws dominate: a tiny
T5 fine-tune under the Seq2Seq Trainer spent 23 of its 92 ms in ``bernoulli_``, and with
``dropout_rate=0`` the step went from 100 to 61 ms; BERT and minGPT show the same. Spread over
a dozen small modules, no single one is dominant, so the tree's per-module advice never names
it. The rule adds up every module whose class is a dropout (``Dropout``, ``Dropout1d/2d/3d``,
``AlphaDropout``, ``FeatureAlphaDropout``) and advises when they are at least
:data:`THRESHOLD` of the step. The saving is their measured time (all of it if dropout goes,
a stated range down to half for a lower ``p``), of the step as it runs without the profiler
(the tree's times are the detailed steps', which its hooks slow: minGPT's chargpt was told 574 ms
of a 1,846 ms step, the tree's time in 4,033 ms detailed steps; 152 ms of the unprofiled step,
measured 155 ms with dropout 0); whether quality allows it is the user's call.

Example:
    >>> drop = {"kind": "module", "path": "enc.drop", "type": "Dropout",
    ...         "total_ms": {"median": 30.0}, "forward_ms": {"median": 12.0}, "children": []}
    >>> tree = {"kind": "root", "path": "", "total_ms": {"median": 100.0}, "children": [drop]}
    >>> [a.rule for a in dropout_share({"step_ms": {"median": 100.0}, "tree": tree})]
    ['dropout']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    SPEEDUPS,
    Advice,
    center,
    fmt_ms,
    is_cuda,
    pct,
    saving_step_ms,
    tree_step_ms,
)
from torchdoctor.session_read import node_ms, walk

#: the dropout modules must take at least this share of the step
THRESHOLD = 0.10
#: module classes that draw a random mask per call in training
DROPOUT_TYPES = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                           "FeatureAlphaDropout"})  # fmt: skip


def dropout_share(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when the dropout modules add up to >= THRESHOLD of the step (see the module
    docstring).

    Example:
        >>> dropout_share({})  # (a session without the evidence this rule reads)
        []
    """
    tree, step = session.get("tree"), tree_step_ms(session)
    if not tree or step <= 0:
        return []
    found = [n for n, _ in walk(tree) if str(n.get("type") or "") in DROPOUT_TYPES
             and n.get("kind", "module") == "module"]  # fmt: skip
    ms = sum(node_ms(n) for n in found)
    inside, attention = _in_sdpa(session, tree)  # (attention dropout: no module shows it)
    speed = SPEEDUPS["attention_dropout_cpu"]
    low, high = inside * (1 - 1 / speed.low), inside * (1 - 1 / speed.high)
    if ms + low < THRESHOLD * step:
        return []
    evidence = []
    if found:
        forward = sum(center(n.get("forward_ms")) for n in found)
        heaviest = max(found, key=node_ms)
        evidence += [
            f"{len(found)} dropout modules: {fmt_ms(ms)} per step ({pct(ms, step):.0f}%), "
            f"forward {fmt_ms(forward)}, backward {fmt_ms(max(0.0, ms - forward))}",
            f"the heaviest: {heaviest.get('path')} ({fmt_ms(node_ms(heaviest))})",
            "each draws a mask the size of its input (bernoulli_) in training; spread over "
            "many small modules, none dominates the tree on its own",
        ]
    multihead = attention is not None and attention.get(
        "attn_implementation") == "nn.MultiheadAttention"
    if attention is not None:  # (first: the larger part, which no row of the tree names)
        evidence.insert(0,
            f"{attention.get('model')}'s attention dropout ("
            + (f"{attention.get('layers')} nn.MultiheadAttention layer(s) with dropout="
               f"{attention.get('p'):g}) drops the attention weights inside the layer"
               if multihead else
               f"{attention.get('attribute')}={attention.get('p'):g}) runs inside "
               "scaled_dot_product_attention, whose CPU kernel takes its slow math path when "
               "dropout_p > 0")
            + f": the attention modules' own time is {fmt_ms(inside)} per step, {fmt_ms(low)} "
            f"to {fmt_ms(high)} of it the dropout's ({speed.source})"
        )
    share = pct(ms + low, step)
    unprofiled = saving_step_ms(session) / step  # (the tree's ms are the detailed steps')
    return [
        Advice(
            rule="dropout",
            title=f"dropout takes {'at least ' if attention else ''}{share:.0f}% of the step: "
            + ("its random masks, one per activation, forward and backward" if not attention
               else "its masks, and the attention weights' dropout inside "
               "nn.MultiheadAttention" if multihead
               else "its masks, and attention dropout inside SDPA (the CPU kernel's slow path)"),
            confidence="medium",
            evidence=evidence,
            fix="If the recipe allows, lower the dropout probability or set it to 0 (many "
            "pretraining and fine-tuning recipes for large models do; check quality on your "
            "validation set); torch.compile fuses the masks with the ops around them; on a GPU "
            "the draws cost less than on a CPU.",
            code=("nn.MultiheadAttention(d_model, nhead, dropout=0.0)  # or nn.Transformer"
                  "(..., dropout=0.0): the attention weights' dropout" if multihead else
                  f"config.{attention.get('attribute')} = 0.0  # attention dropout inside SDPA"
                  if attention else "config.dropout_rate = 0.0  # Hugging Face configs: dropout, "
                  "hidden_dropout_prob, attention_probs_dropout_prob ..."),  # fmt: skip
            references=["torch.nn.Dropout", "torch.compile"],
            estimated_saving_ms=(ms + low) * unprofiled,
            saving_range_ms=((ms / 2 + low) * unprofiled, (ms + high) * unprofiled),
            heat=min(1.0, (ms + low) / step),
            cause="dropout",
        )
    ]


#: module classes of attention (their innermost ones' own time holds the SDPA call)
_ATTENTION = re.compile(r"Attention")


def _in_sdpa(session: Mapping[str, Any], tree: Mapping[str, Any]) -> tuple[float, dict | None]:
    """``(ms, the model's attention dropout)``: the own time of the innermost attention modules
    when a Hugging Face model runs attention dropout inside SDPA in training on a CPU
    (``environment.attention_dropout``), else ``(0.0, None)``.

    Example:
        >>> own = {"kind": "self", "total_ms": {"median": 20.0}}
        >>> attn = {"kind": "module", "type": "BertSdpaSelfAttention", "children": [own]}
        >>> s = {"environment": {"attention_dropout": {"p": 0.1}, "device": "cpu"},
        ...      "phases": {"backward": {"median": 5.0}}}
        >>> _in_sdpa(s, {"children": [attn]})[0]
        20.0
    """
    environment = session.get("environment") or {}
    attention = environment.get("attention_dropout")
    backward = center((session.get("phases") or {}).get("backward"))
    if not attention or backward <= 0 or is_cuda(session):
        return 0.0, None
    innermost = [
        n for n, _ in walk(tree)
        if n.get("kind", "module") == "module" and _ATTENTION.search(str(n.get("type") or ""))
        and not any(_ATTENTION.search(str(c.get("type") or "")) for c, _ in walk(n) if c is not n)
    ]  # fmt: skip
    own = sum(node_ms(c) for n in innermost for c in n.get("children") or ()
              if c.get("kind") == "self")  # fmt: skip
    own += sum(node_ms(n) for n in innermost if not n.get("children"))  # (a leaf: all its own;
    # nn.MultiheadAttention uses its out_proj's weights, never calls it)
    return (own, attention) if own > 0 else (0.0, None)
