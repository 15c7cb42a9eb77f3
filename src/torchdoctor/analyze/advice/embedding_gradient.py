"""Rule ``embedding-gradient``: an ``nn.Embedding`` whose backward is many times its forward.

Forward, an embedding gathers the rows it looks up; backward, a dense one (the default) makes a
gradient the size of its whole table, zero-filled, scatters the looked-up rows' gradients into
it and adds it to ``.grad``, at every call. With a large table and few rows per call (a
vocabulary looked up one token at a time, as in the PyTorch seq2seq tutorial) the backward is
the table's size each call, not the rows'. ``sparse=True`` makes a gradient of the looked-up
rows only; looking all the tokens up in one call makes one table-sized gradient instead of one
per call. A 8000 x 256 table looked up once per token of a 10-token sentence: 29.3 ms a
training step dense, 9.1 ms sparse, 7.4 ms dense in one call (SGD, CPU).

The saving stated is measured when the profiler could (``collect/embedding_probe.py``: the
step's calls on the module's own table and lookups, dense and sparse: the tree's backward of a
first layer runs to the next mark and holds more), else the module's backward less its forward
(a sparse backward scatters what the forward gathered); the optimizer's update of the whole table, which a sparse gradient also
spares SGD without momentum, is not counted. Sparse gradients need an optimizer that takes
them (SGD without weight decay, Adagrad, SparseAdam); Adam, AdamW and RMSprop refuse them.
A weight tied to a linear layer of the same size (a language model's head) gets a dense
gradient there anyway: an embedding with a linear layer as large as its table is not told.

Example:
    >>> emb = {"kind": "module", "path": "encoder.embedding", "type": "Embedding",
    ...        "calls_per_step": 7.0, "params": 1103360, "forward_ms": {"median": 0.4},
    ...        "backward_ms": {"median": 8.9}, "total_ms": {"median": 9.3}, "children": []}
    >>> tree = {"kind": "root", "total_ms": {"median": 50.0}, "children": [emb]}
    >>> (advice,) = embedding_gradient({"step_ms": {"median": 50.0}, "tree": tree})
    >>> advice.title, round(advice.estimated_saving_ms, 1)  # (its backward less its forward)
    ('encoder.embedding (Embedding) backward is 22x its forward: make its gradient sparse', 8.5)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    Advice,
    center,
    fmt_ms,
    pct,
    saving_step_ms,
    tree_step_ms,
    walk,
)
from torchdoctor.analyze.advice.module_names import named_modules
from torchdoctor.analyze.advice.ops_table import EMBEDDING_TYPES, MATMUL_TYPES

#: backward / forward ratio from which the table-sized gradient dominates the module
MIN_RATIO = 4.0
#: the module's backward share of the step from which it is told
MIN_SHARE = 0.05
#: optimizers that take sparse gradients as they are (SGD: without weight decay)
SPARSE_OPTIMIZERS = frozenset({"SGD", "Adagrad", "SparseAdam"})

_FIX = (
    "A dense nn.Embedding makes, at every call, a gradient the size of its whole table "
    "(num_embeddings x embedding_dim, zero-filled) and adds it to .grad, however few rows the "
    "call looked up. Pass sparse=True (nn.Embedding(..., sparse=True); on a model built by a "
    "library, set the module's attribute: model.embedding.sparse = True): the gradient holds "
    "the looked-up rows only. It needs an optimizer that takes sparse gradients: SGD (without "
    "weight_decay), Adagrad or torch.optim.SparseAdam; with Adam or AdamW, give the embedding's "
    "parameters to a SparseAdam of their own (its moments then move only for the rows seen). "
    "Where the module is called once per token, looking the whole sequence up in one call "
    "(emb(tokens)) also makes one table-sized gradient instead of one per call. Gradient "
    "clipping (clip_grad_norm_) does not take sparse gradients: clip the other parameters. "
    "Fine-tuning a pretrained model, freezing the table "
    "(embedding.weight.requires_grad_(False)) saves its gradient and its update altogether, "
    "where the task allows."
)
_CODE = (
    "self.embedding = nn.Embedding(num_tokens, dim, sparse=True)\n"
    "model.embedding.sparse = True  # (the same, on a model a library built)\n"
    "# with Adam/AdamW: a SparseAdam for the embedding, the usual optimizer for the rest\n"
    "sparse_opt = torch.optim.SparseAdam(list(model.embedding.parameters()), lr=lr)"
)


def _ms(node: Mapping[str, Any], key: str) -> float:
    return center(node.get(key))


def _same_size_linears(tree: Mapping[str, Any], params: int) -> list[str]:
    """Paths of the linear layers holding as many parameters as the table (a tied head?).

    Example:
        >>> tree = {"children": [{"kind": "module", "path": "lm_head", "type": "Linear",
        ...                       "params": 64}]}
        >>> _same_size_linears(tree, 64), _same_size_linears(tree, 65)
        (['lm_head'], [])
    """
    return [str(n.get("path")) for n, _ in walk(tree)
            if n.get("kind") == "module" and str(n.get("type")) in MATMUL_TYPES
            and int(n.get("params") or -1) == params]  # fmt: skip


def _measured(node: Mapping[str, Any], calls: float) -> tuple[float, str] | None:
    """The saving the profiler measured on the module's own table and lookups
    (``collect/embedding_probe.py``: one step's calls, dense and sparse), per step, with its
    evidence (``{name}`` to fill); None when not measured.

    Example:
        >>> node = {"embedding": {"rows": 1, "table": [8000, 256], "calls": 10,
        ...         "measured": {"dense_ms": 26.9, "sparse_ms": 0.5, "reps": 5}}}
        >>> round(_measured(node, 10.0)[0], 1)
        26.4
    """
    probe = node.get("embedding") or {}
    measured = probe.get("measured") or {}
    if not measured or not probe.get("calls"):
        return None
    dense, sparse = float(measured["dense_ms"]), float(measured["sparse_ms"])
    per_step = max(0.0, dense - sparse) * (calls or probe["calls"]) / float(probe["calls"])
    table = " x ".join(str(n) for n in probe.get("table") or ())
    return per_step, (
        f"measured on its own {table} table, {probe['calls']} calls of {probe.get('rows')} "
        f"lookups into one gradient: {fmt_ms(dense)} dense, {fmt_ms(sparse)} with sparse=True "
        f"(median of {measured.get('reps')}): ~{fmt_ms(per_step)} per step saved by {{name}}")


def _heavy_embeddings(tree: Mapping[str, Any], step: float) -> list[tuple[Any, str]]:
    """The embedding modules (with their advice names) whose backward is :data:`MIN_RATIO`
    times their forward or more and :data:`MIN_SHARE` of the step or more, and no linear layer
    as large as their table (a tied head), heaviest first.

    Example:
        >>> emb = {"kind": "module", "path": "emb", "type": "Embedding",
        ...        "forward_ms": {"median": 1.0}, "backward_ms": {"median": 3.0}}
        >>> _heavy_embeddings({"children": [emb]}, 10.0)  # 3x its forward: not told
        []
    """
    found = []
    for node, name in named_modules(tree):
        forward, backward = _ms(node, "forward_ms"), _ms(node, "backward_ms")
        params = int(node.get("params") or 0)
        if (str(node.get("type")) in EMBEDDING_TYPES and backward >= MIN_SHARE * step
                and backward >= MIN_RATIO * forward
                and not (params and _same_size_linears(tree, params))):  # fmt: skip
            found.append((node, name))  # (a same-size linear: a tied head, dense anyway)
    return sorted(found, key=lambda found: -_ms(found[0], "backward_ms"))


def embedding_gradient(session: Mapping[str, Any]) -> list[Advice]:
    """One advice for the embedding modules whose backward is :data:`MIN_RATIO` times their
    forward or more and :data:`MIN_SHARE` of the step or more (the saving: all of theirs).

    Example:
        >>> embedding_gradient({"step_ms": {"median": 10.0}, "tree": {"kind": "root"}})
        []
    """
    step = tree_step_ms(session)
    tree = session.get("tree")
    if step <= 0 or not tree:
        return []
    found = _heavy_embeddings(tree, step)
    if not found:
        return []
    unprofiled = saving_step_ms(session)
    evidence, saving, bound, probed = [], 0.0, 0.0, 0
    for node, name in found:
        forward, backward = _ms(node, "forward_ms"), _ms(node, "backward_ms")
        calls = float(node.get("calls_per_step") or 0.0)
        params = int(node.get("params") or 0)
        evidence.append(
            f"{name} takes {fmt_ms(backward)} of backward per step ({pct(backward, step):.0f}% "
            f"of the step) against {fmt_ms(forward)} forward"
            + (f", in {calls:.3g} calls" if calls >= 1.5 else "")
            + (f"; its table has {params:,} elements" if params else ""))
        measured = _measured(node, calls)
        if measured is not None:  # (its own table and lookups, timed both ways; at most
            probed += 1  # its backward in the step: the probe may have met a busier machine)
            ms = min(measured[0], unprofiled * backward / step)
            saving, bound = saving + ms, bound + ms
            evidence.append(measured[1].format(name=name) + (
                f" (at most its backward in the step, {fmt_ms(ms)})" if ms < measured[0] else ""))
            continue
        saving += unprofiled * (backward - forward) / step
        bound += unprofiled * backward / step
    node, name = found[0]
    ratio = _ms(node, "backward_ms") / max(_ms(node, "forward_ms"), 1e-9)
    title = (f"{name} ({node.get('type')}) backward is {ratio:.0f}x its forward"
             if len(found) == 1 else f"{len(found)} embeddings' backward is up to {ratio:.0f}x "
             f"their forward ({', '.join(n for _, n in found[:3])})")  # fmt: skip
    item = Advice(
        rule="embedding-gradient",
        title=title + (": make its gradient sparse" if len(found) == 1
                       else ": make their gradients sparse"),  # fmt: skip
        confidence="medium",
        evidence=evidence + ["backward this much longer than the lookup is the table-sized "
                             "dense gradient made at each call"],  # fmt: skip
        fix=_FIX,
        references=["torch.nn.Embedding", "torch.optim.SparseAdam"],
        code=_CODE,
        heat=min(1.0, bound / unprofiled) if unprofiled > 0 else 0.0,
        cause="embedding-gradient",
    )
    item.estimated_saving_ms, item.saving_range_ms = saving, [saving, bound]
    if probed < len(found):
        item.evidence.append(
            f"a sparse gradient costs about what the lookup does: ~{fmt_ms(saving)} per step "
            "saved (backward less forward where not measured), more where the optimizer then "
            "updates only the rows seen")
    optimizers = [str(o.get("type")) for o in
                  (session.get("environment") or {}).get("optimizers") or ()]  # fmt: skip
    unsupported = sorted({o for o in optimizers if o not in SPARSE_OPTIMIZERS})
    if unsupported or not optimizers:
        item.confidence = "low"
        item.evidence.append(
            f"the run's {', '.join(unsupported)} refuses sparse gradients: the embedding needs "
            "a SparseAdam of its own" if unsupported else
            "no optimizer step was seen: sparse gradients need one that takes them")
    return [item]
