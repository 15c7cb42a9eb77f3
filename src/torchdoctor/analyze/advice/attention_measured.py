"""The dominant-module advice's attention remedy, from what was measured on the user's shapes.

``nn.MultiheadAttention`` runs the fused ``scaled_dot_product_attention`` kernel only when called
with ``need_weights=False``. When the profiler timed an attention module's call both ways
(``node["attention"]["measured"]``, ``collect/attention_probe.py``), the remedy states that
measured saving, not a range: the module's time in the step times ``1 - fused / as called``. When
the fused call measured no faster (a CPU in training with dropout: SDPA takes its math path, and
was measured 0.60x-1.07x on DETR's encoder), the remedy is not given at all; the advice says
why and falls to the next remedy. The fused-attention remedy names bf16 only where the device
computes it natively (``environment.bf16_native``; elsewhere ``emulated-bf16`` says it is slower).

Example:
    >>> call = {"query": [625, 2, 256], "key": [625, 2, 256], "dropout": 0.1, "training": True,
    ...         "key_padding_mask": {"shape": [2, 625]}, "attn_mask": None, "batch_first": False,
    ...         "measured": {"as_called_ms": 200.0, "fused_ms": 330.0, "reps": 5}}
    >>> attn = {"path": "enc.0.self_attn", "total_ms": {"median": 150.0}, "attention": call}
    >>> m = measured_attention({"path": "enc.0", "children": [attn]}, None)
    >>> m.faster, round(m.fused_ms)
    (False, 248)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torchdoctor.session_read import attention_dims, dropout_in_training, fmt_ms, node_ms, walk

#: below this measured speedup the fused path is not worth a code change
MIN_SPEEDUP = 1.05

#: the fused-attention remedy without bf16 (a device that emulates it: emulated-bf16's advice)
TITLE_WITHOUT_BF16 = "use fused attention (SDPA)"
FIX_WITHOUT_BF16 = (
    "Replace hand-written softmax(QK^T)V with torch.nn.functional.scaled_dot_product_attention "
    "(nn.MultiheadAttention uses it when need_weights=False)."
)
MEASURED_FIX = (
    "nn.MultiheadAttention computes softmax(QK^T)V by hand and returns the attention weights "
    "unless it is called with need_weights=False; then it runs the fused "
    "scaled_dot_product_attention kernel (flash or memory-efficient on a GPU). Where the "
    "weights are not used (`out, _ = attn(...)`, `attn(...)[0]`), pass need_weights=False. The "
    "saving is this call timed both ways on its own shapes, masks and dropout, here."
)
MEASURED_CODE = (
    "out = self.self_attn(q, k, value=src, key_padding_mask=mask)[0]                     "
    "# before\n"
    "out = self.self_attn(q, k, value=src, key_padding_mask=mask, need_weights=False)[0]  "
    "# after"
)


@dataclass
class MeasuredAttention:
    """The measured attention modules under a dominant part: their time in the step
    (``step_ms``) and as fused calls would take it (``fused_ms``); the time of those measured
    faster fused (``faster_ms``, by at least :data:`MIN_SPEEDUP`) and the saving on them alone
    (``saving_ms``: the others are left as they are); the calls to change (``targets``), one
    evidence line per distinct call.

    Example:
        >>> m = MeasuredAttention(100.0, 80.0, 60.0, 20.0, "enc.0.attn")
        >>> round(m.speedup, 2), m.faster
        (1.5, True)
    """

    step_ms: float
    fused_ms: float
    faster_ms: float
    saving_ms: float
    targets: str = ""
    evidence: list[str] = field(default_factory=list)
    dropout_in_training: bool = False  # (SDPA's math path on a CPU)
    every_call: bool = True  # every measured call was faster fused

    @property
    def speedup(self) -> float:
        """Of the calls measured faster."""
        rest = self.faster_ms - self.saving_ms
        return self.faster_ms / rest if rest > 0 else 1.0

    @property
    def faster(self) -> bool:
        return self.saving_ms > 0


def _shape_text(call: Mapping[str, Any]) -> str:
    """The call's geometry in words: queries, keys, batch, masks, dropout.

    Example:
        >>> _shape_text({"query": [2, 100, 256], "key": [2, 625, 256], "batch_first": True,
        ...              "key_padding_mask": None, "attn_mask": {"shape": [100, 625]},
        ...              "dropout": 0.0, "training": False})
        '100 queries x 625 keys, batch 2, width 256, an attn_mask'
    """
    batch, length, keys = attention_dims(call)
    parts = [f"{length} queries x {keys} keys, batch {batch}, width {call['query'][-1]}"]
    parts += [m for m in ("a key_padding_mask", "an attn_mask") if call.get(m.split()[1])]
    if dropout_in_training(call):
        parts.append(f"dropout {call['dropout']:g} in training")
    return ", ".join(parts)


def measured_attention(
    node: Mapping[str, Any], group: list | None
) -> MeasuredAttention | None:
    """The attention modules inside ``node`` (or each layer of ``group``) whose call was timed
    both ways; None without any.

    Example:
        >>> call = {"query": [10, 1, 8], "key": [10, 1, 8], "batch_first": False,
        ...         "measured": {"as_called_ms": 2.0, "fused_ms": 1.0, "reps": 3}}
        >>> layer = {"path": "l", "children": [
        ...     {"path": "l.attn", "total_ms": {"median": 6.0}, "attention": call}]}
        >>> m = measured_attention(layer, None)
        >>> m.step_ms, m.saving_ms, m.evidence[0]
        (6.0, 3.0, 'l.attn: need_weights=False measured 2 ms -> 1 ms a call, 2.00x (10 queries x 10 keys, batch 1, width 8)')
    """
    found: dict[tuple, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    for layer in group or [node]:
        for part, _ in walk(layer):
            call = part.get("attention")
            measured = (call or {}).get("measured") or {}
            if measured.get("fused_ms") and measured.get("as_called_ms"):
                key = (measured["as_called_ms"], measured["fused_ms"])
                found.setdefault(key, []).append((part, call))
    if not found:
        return None
    result = MeasuredAttention(0.0, 0.0, 0.0, 0.0)
    for (slow, fast), parts in sorted(found.items(), key=lambda kv: -sum(
            node_ms(p) for p, _ in kv[1])):  # fmt: skip
        ms = sum(node_ms(p) for p, _ in parts)
        call = parts[0][1]
        result.dropout_in_training |= dropout_in_training(call)
        result.step_ms += ms
        result.fused_ms += ms * fast / slow
        more = f" and {len(parts) - 1} more like it" if len(parts) > 1 else ""
        who = f"{parts[0][0].get('path')}{more}"
        faster = slow / fast >= MIN_SPEEDUP
        if faster:
            result.faster_ms += ms
            result.saving_ms += ms * (1.0 - fast / slow)
            result.targets = f"{result.targets}, {who}" if result.targets else who
        else:
            result.every_call = False
        result.evidence.append(
            f"{who}: need_weights=False measured {fmt_ms(slow)} -> {fmt_ms(fast)} a call, "
            f"{slow / fast:.2f}x ({_shape_text(call)})"
            + ("" if faster else ": not faster, leave it as it is")
        )
    return result
