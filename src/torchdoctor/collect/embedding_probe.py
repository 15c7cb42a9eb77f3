"""What a dense embedding's gradient costs on the user's own table and lookups: measured.

A dense ``nn.Embedding`` / ``nn.EmbeddingBag`` makes, at each call, a gradient the size of its
whole table (zero-filled, the looked-up rows scattered in) and adds it to ``.grad``;
``sparse=True`` makes one of the looked-up rows only. The module's backward time in the tree is
not that cost alone: a first layer has no end mark in backward (its inputs need no grad) and
takes the time up to the next mark, and on a busy machine the wait for a core (a
sentence-transformers run stated 74 ms of savings from a 94 ms backward where the cure saved
15-26 ms). So the recorder notes each trained embedding's first call in a detailed step
(:func:`note_embedding_call`: its lookups per call, the table's shape), and when the profiler
stops, after its hooks are gone, :func:`probe_embeddings` times the step's calls of it both
ways on the module's own weight (a detached view: the user's ``.grad`` is never touched), dense
and sparse in alternation, within a time budget. The tree carries the result on the module's
node (``"embedding"``), which the ``embedding-gradient`` advice reads.

Example:
    >>> import torch
    >>> from types import SimpleNamespace
    >>> emb = torch.nn.Embedding(1000, 16)
    >>> rec = SimpleNamespace(embedding_calls={}, embedding_weights={}, first_serial=1)
    >>> for _ in range(2):  # two calls in one step
    ...     note_embedding_call(rec, 4, emb, (torch.tensor([1, 2, 3]),))
    >>> [rec.embedding_calls[4][key] for key in ("rows", "table", "calls")]
    [3, [1000, 16], 2]
    >>> probe_embeddings(rec.embedding_calls, rec.embedding_weights, budget_s=2.0)
    >>> sorted(rec.embedding_calls[4]["measured"]), rec.embedding_weights
    (['dense_ms', 'reps', 'sparse_ms'], {})
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

#: timed pairs (dense, sparse) per table, after one warm-up pair
MIN_REPS, MAX_REPS = 3, 5
#: tables larger than this are not probed (the probe makes a gradient the table's size)
MAX_TABLE_BYTES = 1 << 30


def note_embedding_call(recorder: Any, node: int, module: Any, args: Any) -> None:
    """At an embedding module's first call in a detailed step: its lookups per call and its
    table, when the call trains a dense table (``embedding_calls``: node -> dict or None;
    ``embedding_weights``: node -> the weight, until the probe); at its later calls, the most
    calls it made in one step (the recorder's ``first_serial`` tells the steps apart)."""
    if node in recorder.embedding_calls:
        noted = recorder.embedding_calls[node]
        if noted:  # (the most calls of a detailed step: the first may be a partial step)
            step, count = noted["step"]
            count = count + 1 if step == recorder.first_serial else 1
            noted["step"], noted["calls"] = (recorder.first_serial, count), max(noted["calls"], count)
        return
    weight = getattr(module, "weight", None)
    indices = args[0] if args else None
    if (not isinstance(weight, torch.Tensor) or not isinstance(indices, torch.Tensor)
            or getattr(module, "sparse", True) or not weight.requires_grad
            or not torch.is_grad_enabled() or weight.dim() != 2):  # fmt: skip
        recorder.embedding_calls[node] = None
        return
    recorder.embedding_calls[node] = {
        "rows": int(indices.numel()), "table": list(weight.shape),
        "dtype": str(weight.dtype).removeprefix("torch."),
        "bag": isinstance(module, torch.nn.EmbeddingBag), "calls": 1,
        "step": (recorder.first_serial, 1),
    }  # fmt: skip
    recorder.embedding_weights[node] = weight


def _one_step(weight: torch.Tensor, indices: torch.Tensor, calls: int, sparse: bool,
              bag: bool) -> float:  # fmt: skip
    """Milliseconds of ``calls`` lookups and their backward into one fresh leaf's ``.grad``."""
    leaf = weight.detach().requires_grad_(True)
    sync = torch.cuda.synchronize if leaf.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        if bag:
            out = F.embedding_bag(indices.view(1, -1), leaf, sparse=sparse)
        else:
            out = F.embedding(indices, leaf, sparse=sparse)
        out.sum().backward()
    sync()
    return 1e3 * (time.perf_counter() - start)


def probe_embeddings(calls: dict[int, dict | None], weights: dict[int, Any],
                     budget_s: float) -> None:  # fmt: skip
    """Time each noted table's calls of a step (as many as the noted step made, into one
    ``.grad``: each after the first adds its gradient), dense and sparse, alternating, until
    ``budget_s`` runs out; the medians go into the note (``measured``: ``dense_ms``,
    ``sparse_ms``, ``reps``). The weights are released."""
    deadline = time.perf_counter() + budget_s
    for node, call in calls.items():
        weight = weights.pop(node, None)
        if call:
            call.pop("step", None)
        if not call or weight is None or time.perf_counter() > deadline:
            continue
        if weight.numel() * weight.element_size() > MAX_TABLE_BYTES:
            continue
        indices = torch.randint(0, int(weight.shape[0]), (max(1, call["rows"]),),
                                device=weight.device)  # fmt: skip
        times: dict[bool, list[float]] = {False: [], True: []}
        with torch.enable_grad():
            for rep in range(MAX_REPS + 1):
                for sparse in (False, True):
                    elapsed = _one_step(weight, indices, call["calls"], sparse, call["bag"])
                    if rep:  # (the first pair warms up)
                        times[sparse].append(elapsed)
                if rep >= MIN_REPS and time.perf_counter() > deadline:
                    break
        if times[False]:
            call["measured"] = {"dense_ms": statistics.median(times[False]),
                                "sparse_ms": statistics.median(times[True]),
                                "reps": len(times[False])}  # fmt: skip
    weights.clear()
