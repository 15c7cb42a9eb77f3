"""Whether ``nn.MultiheadAttention``'s fused path is faster on the user's own shapes: measured.

``nn.MultiheadAttention`` computes its attention with the fused
``scaled_dot_product_attention`` kernel only when it is called with ``need_weights=False``; the
default (``True``) computes softmax(QK^T)V by hand and returns the weights (DETR, many vision
transformers call it so and drop the weights). Whether the fused path is faster depends on the
device and the call: on a CPU, in training with dropout, SDPA takes its math path and was
measured *slower* here (DETR's encoder self-attention, 625 tokens, dropout 0.1: 0.60x without a
mask, 1.07x with one; without dropout 1.50x-1.83x). So the advice does not state a speedup for
it: the recorder reads each attention module's call at its first call in a detailed step
(:func:`note_attention_call`: shapes, masks, flags), and when the profiler stops, after its hooks
are gone, :func:`probe_attention` times the same call both ways on a fresh module of the same
configuration (forward, and backward when the call built a graph), alternating, within a time
budget. The tree carries the result on the module's node (``"attention"``), which the
dominant-module advice reads (``analyze/advice/attention_measured.py``).

The probe runs under ``torch.random.fork_rng`` (dropout draws random numbers: the user's
generator state is left as it was) and never touches the user's module or its gradients.

Example:
    >>> import torch
    >>> mha = torch.nn.MultiheadAttention(16, 2)
    >>> x = torch.randn(5, 2, 16)
    >>> call = attention_call(mha, (x, x, x), {})
    >>> call["query"], call["need_weights"], call["same"]
    ([5, 2, 16], True, 'qkv')
    >>> probe_attention({1: call}, budget_s=2.0)
    >>> sorted(call["measured"])
    ['as_called_ms', 'fused_ms', 'reps']
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import torch

from torchdoctor.session_read import attention_dims

#: ``nn.MultiheadAttention.forward``'s parameters, in order (positional arguments bind to them)
_PARAMS = (
    "query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
    "average_attn_weights", "is_causal",
)  # fmt: skip
#: the probe's budget: this share of the profiled run's time, within these bounds (seconds)
BUDGET_SHARE, BUDGET_MIN_S, BUDGET_MAX_S = 0.05, 1.0, 5.0
#: timed pairs (as called, fused) per configuration, after one warm-up pair
MIN_REPS, MAX_REPS = 3, 5


def _mask(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, torch.Tensor):
        return None
    return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}


def attention_call(module: Any, args: Any, kwargs: Any) -> dict[str, Any] | None:
    """What one ``nn.MultiheadAttention`` call was: its module's configuration, the inputs'
    shapes, masks, flags, dtype, device, autocast, and whether it built a graph. None when its
    query, key and value are not all tensors.

    Example:
        >>> import torch
        >>> mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        >>> q, kv = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
        >>> call = attention_call(mha, (q, kv, kv), {"need_weights": False})
        >>> call["key"], call["need_weights"], call["same"], call["grad"]
        ([2, 4, 8], False, 'kv', True)
    """
    bound = dict(zip(_PARAMS, args))
    bound.update(kwargs or {})
    q, k, v = bound.get("query"), bound.get("key"), bound.get("value")
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        return None
    device = q.device.type
    autocast = torch.is_autocast_enabled(device)
    return {
        "embed_dim": int(module.embed_dim), "num_heads": int(module.num_heads),
        "kdim": int(module.kdim), "vdim": int(module.vdim),
        "bias": module.in_proj_bias is not None, "add_bias_kv": module.bias_k is not None,
        "add_zero_attn": bool(module.add_zero_attn), "dropout": float(module.dropout),
        "batch_first": bool(module.batch_first), "training": bool(module.training),
        "query": list(q.shape), "key": list(k.shape), "value": list(v.shape),
        "same": "qkv" if q is k and k is v else "qk" if q is k else "kv" if k is v else "",
        "key_padding_mask": _mask(bound.get("key_padding_mask")),
        "attn_mask": _mask(bound.get("attn_mask")),
        "is_causal": bool(bound.get("is_causal", False)),
        "need_weights": bool(bound.get("need_weights", True)),
        "average_attn_weights": bool(bound.get("average_attn_weights", True)),
        "inputs_grad": [bool(t.requires_grad) for t in (q, k, v)],
        "grad": torch.is_grad_enabled()
        and (any(t.requires_grad for t in (q, k, v)) or any(p.requires_grad for p in module.parameters())),
        "dtype": str(q.dtype).removeprefix("torch."), "device": str(q.device),
        "autocast": str(torch.get_autocast_dtype(device)).removeprefix("torch.")
        if autocast else None,
        "stock": type(module) is torch.nn.MultiheadAttention,  # (a subclass may run its own)
    }  # fmt: skip


def note_attention_call(recorder: Any, node: int, args: Any, kwargs: Any) -> None:
    """At the end of an attention module's first call in a detailed step (the recorder's
    ``attention_pending``: node -> module, set when the call began), keep what the call was
    (``attention_calls``: node -> :func:`attention_call`'s dict).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> mha = torch.nn.MultiheadAttention(8, 2)
        >>> rec = SimpleNamespace(attention_pending={3: mha}, attention_calls={})
        >>> x = torch.randn(4, 1, 8)
        >>> note_attention_call(rec, 3, (x, x, x), {})
        >>> rec.attention_calls[3]["query"], rec.attention_pending
        ([4, 1, 8], {})
    """
    module = recorder.attention_pending.pop(node, None)
    if module is None:
        return
    try:
        recorder.attention_calls[node] = attention_call(module, args, kwargs)
    except (TypeError, ValueError, AttributeError, RuntimeError):  # (an unusual subclass)
        recorder.attention_calls[node] = None


def probe_budget(run_s: float) -> float:
    """Seconds the probe may take after a run of ``run_s`` seconds.

    Example:
        >>> probe_budget(10.0), probe_budget(60.0), probe_budget(600.0)
        (1.0, 3.0, 5.0)
    """
    return round(min(BUDGET_MAX_S, max(BUDGET_MIN_S, BUDGET_SHARE * run_s)), 3)


def _key(call: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in call.items() if k != "measured"))


def _work(call: dict[str, Any]) -> float:
    """Multiply-adds of its attention core (batch x queries x keys x width), to measure the
    heaviest configuration first.

    Example:
        >>> _work({"query": [10, 2, 8], "key": [20, 2, 8], "batch_first": False, "embed_dim": 8})
        3200.0
    """
    batch, length, keys = attention_dims(call)
    return float(batch) * length * keys * call["embed_dim"]


def _runner(call: dict[str, Any]) -> tuple[Any, Any]:
    """The call, twice: as the user made it, and with ``need_weights=False``."""
    device = torch.device(call["device"])
    dtype = getattr(torch, call["dtype"])
    mha = torch.nn.MultiheadAttention(
        call["embed_dim"], call["num_heads"], dropout=call["dropout"], bias=call["bias"],
        add_bias_kv=call["add_bias_kv"], add_zero_attn=call["add_zero_attn"],
        kdim=call["kdim"], vdim=call["vdim"], batch_first=call["batch_first"],
        device=device, dtype=dtype,
    )  # fmt: skip
    mha.train(call["training"])
    if not call["grad"]:
        mha.requires_grad_(False)
    grads = call["inputs_grad"] if call["grad"] else [False] * 3
    q = torch.randn(call["query"], device=device, dtype=dtype, requires_grad=grads[0])
    k = q if call["same"] in ("qkv", "qk") else torch.randn(
        call["key"], device=device, dtype=dtype, requires_grad=grads[1])
    v = k if call["same"] in ("qkv", "kv") else torch.randn(
        call["value"], device=device, dtype=dtype, requires_grad=grads[2])
    masks = {}
    for name in ("key_padding_mask", "attn_mask"):
        if call[name]:
            masks[name] = torch.zeros(
                call[name]["shape"], device=device, dtype=getattr(torch, call[name]["dtype"])
            )
    kind = device.type

    def one(need_weights: bool) -> None:
        autocast = (
            torch.autocast(kind, dtype=getattr(torch, call["autocast"]))
            if call["autocast"] else contextlib.nullcontext()
        )  # fmt: skip
        with torch.set_grad_enabled(call["grad"]), autocast:
            out = mha(q, k, v, need_weights=need_weights, is_causal=call["is_causal"],
                      average_attn_weights=call["average_attn_weights"], **masks)[0]  # fmt: skip
        if call["grad"] and out.requires_grad:
            out.float().sum().backward()
        if kind == "cuda":
            torch.cuda.synchronize(device)

    return (lambda: one(call["need_weights"])), (lambda: one(False))


def _timed(fn: Any) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1e3


def _measure(call: dict[str, Any], deadline: float) -> dict[str, Any]:
    as_called, fused = _runner(call)
    pair = _timed(as_called) + _timed(fused)  # (warm-up: allocation, kernel choice; an upper
    pair_s = pair / 1e3  # bound of a timed pair)
    if time.perf_counter() + MIN_REPS * pair_s > deadline:
        return {"not_measured": f"a pair of calls takes {pair:.0f} ms, past the probe's time "
                                "budget"}  # fmt: skip
    slow, fast = [], []
    for rep in range(MAX_REPS):
        if rep >= MIN_REPS and time.perf_counter() + pair_s > deadline:
            break
        # alternate which runs first: neither always finds the caches warm from the other
        if rep % 2:
            fast.append(_timed(fused))
            slow.append(_timed(as_called))
        else:
            slow.append(_timed(as_called))
            fast.append(_timed(fused))
    return {
        "as_called_ms": round(statistics.median(slow), 4),
        "fused_ms": round(statistics.median(fast), 4),
        "reps": len(slow),
    }


def probe_attention(calls: dict[int, dict[str, Any] | None], budget_s: float) -> None:
    """Time each distinct attention call that ran unfused (``need_weights`` True on the stock
    module), as called and with ``need_weights=False``, heaviest first, within ``budget_s``
    seconds; each call's dict gets ``measured`` (``as_called_ms``, ``fused_ms``: medians,
    ``reps``) or ``measured: {"not_measured": why}``. Calls that ran fused already, or on a
    subclass, are left as they are.

    Example:
        >>> import torch
        >>> mha = torch.nn.MultiheadAttention(8, 2)
        >>> x = torch.randn(3, 1, 8)
        >>> calls = {1: attention_call(mha, (x, x, x), {}), 2: None,
        ...          3: attention_call(mha, (x, x, x), {"need_weights": False})}
        >>> probe_attention(calls, budget_s=1.0)
        >>> "fused_ms" in calls[1]["measured"], "measured" in calls[3]
        (True, False)
    """
    distinct: dict[tuple, list[dict[str, Any]]] = {}
    for call in calls.values():
        if call and call["need_weights"] and call["stock"] and "measured" not in call:
            distinct.setdefault(_key(call), []).append(call)
    if not distinct:
        return
    deadline = time.perf_counter() + budget_s
    devices = sorted({
        torch.device(c[0]["device"]).index or 0
        for c in distinct.values() if c[0]["device"].startswith("cuda")
    })  # fmt: skip
    with torch.random.fork_rng(devices=devices):
        for members in sorted(distinct.values(), key=lambda c: _work(c[0]), reverse=True):
            if time.perf_counter() >= deadline:
                result: dict[str, Any] = {"not_measured": "the probe's time budget was spent"}
            else:
                try:
                    result = _measure(members[0], deadline)
                except (RuntimeError, ValueError, TypeError, AssertionError) as error:
                    result = {"not_measured": f"{type(error).__name__}: {error}"[:200]}
            for call in members:
                call["measured"] = result
