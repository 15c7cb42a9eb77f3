"""Rule ``decode-without-cache``: an autoregressive loop re-runs the model over every earlier
token at each step.

Steps cut at calls of the outermost module (an inference loop) record the shape of its first
input (``session["steps"][i]["input_shape"]``). When one dimension grows by exactly one from a
step to the next for most steps (a token appended: nanoGPT's ``generate`` feeds the whole
sequence back), or grows so up to a cap and stays there (the sequence cropped to the block size
once it reaches it: :func:`sliding_window`), every step recomputes the keys and values of all
earlier tokens. The run itself measures what that costs: the step time fitted against the
input length (least squares over the light steps, or all when there are too few) gives a
per-token slope; a key/value cache makes each step process one new token, so the saving per step
is at most the slope x (mean length - 1). What a cache leaves of that is at most the attention's
own work (its scores, softmax and weighted sum read every cached key; the projections, child
modules, go): the low end is the saving less the attention modules' (self) time per step, and
never under half the saving (half when the tree shows no attention module).

Example:
    >>> steps = [{"index": i, "wall_ms": 1.0 + 0.1 * (8 + i), "input_shape": [1, 8 + i],
    ...           "detailed": False} for i in range(40)]
    >>> session = {"steps": steps, "config": {"step_boundary": "module"},
    ...            "step_ms": {"mean": 4.75}}
    >>> [(a.rule, round(a.estimated_saving_ms, 2)) for a in decode_without_cache(session)]
    [('decode-without-cache', 1.33)]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, pct
from torchdoctor.session_read import host_steps, node_ms, step_ms, wait_ms

#: a module doing attention, by its class or attribute name (llama2.c's Attention, nanoGPT's
#: CausalSelfAttention and ``attn``, Hugging Face's ``self_attn``)
_ATTENTION = re.compile(r"(?i)attn|attention")

#: steps needed to tell growth from noise
MIN_STEPS = 12
#: share of consecutive step pairs whose input grows by exactly one along one dimension
MIN_GROWING = 0.6
#: correlation of step time with the input length needed to trust the fitted slope
MIN_CORRELATION = 0.5
#: ... or a slope this many standard errors from zero (many steps at one length, a window's
#: cap, keep the correlation low however sure the slope is)
MIN_T = 5.0
#: light steps needed to fit on them alone (detailed steps carry the profiler's hooks)
MIN_LIGHT = 10


def growing_dimension(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> int | None:
    """The dimension along which the second input of a pair of consecutive steps is one longer
    than the first (the others equal) for at least MIN_GROWING of the pairs, or None.

    Example:
        >>> shapes = [[1, 5], [1, 6], [1, 7], [1, 8]]
        >>> growing_dimension(list(zip(shapes, shapes[1:])))
        1
        >>> growing_dimension([([4, 16], [4, 16])] * 3) is None
        True
    """
    pairs = [(a, b) for a, b in pairs if len(a) == len(b) and a]
    if not pairs:
        return None
    for dim in range(len(pairs[0][0])):
        grew = sum(
            1
            for a, b in pairs
            if b[dim] == a[dim] + 1
            and all(x == y for k, (x, y) in enumerate(zip(a, b)) if k != dim)
        )
        if grew >= MIN_GROWING * len(pairs):
            return dim
    return None


#: a sliding window (the input cropped to a block size once it reaches it: nanoGPT's generate
#: with more new tokens than its block): at least this share of the pairs must grow by one ...
MIN_WINDOW_GROWTH = 0.15


def sliding_window(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> tuple[int, int] | None:
    """``(dimension, cap)`` when the input grows by one along a dimension up to a cap and then
    stays at it (MIN_WINDOW_GROWTH of the pairs grow, and growing plus steady-at-the-cap pairs
    make MIN_GROWING of them): a loop feeding back the last ``cap`` tokens; or None.

    Example:
        >>> shapes = [[1, n] for n in range(1, 9)] + [[1, 8]] * 12  # grows to 8, then crops
        >>> sliding_window(list(zip(shapes, shapes[1:])))
        (1, 8)
        >>> sliding_window([([4, 16], [4, 16])] * 20) is None  # a fixed-shape loop
        True
    """
    pairs = [(a, b) for a, b in pairs if len(a) == len(b) and a]
    for dim in range(len(pairs[0][0]) if pairs else 0):
        rest_equal = [
            all(x == y for k, (x, y) in enumerate(zip(a, b)) if k != dim) for a, b in pairs
        ]
        grew = [b[dim] for (a, b), same in zip(pairs, rest_equal) if same and b[dim] == a[dim] + 1]
        if len(grew) < max(3, MIN_WINDOW_GROWTH * len(pairs)):
            continue
        cap = max(grew)
        steady = sum(
            1 for (a, b), same in zip(pairs, rest_equal) if same and a[dim] == b[dim] == cap
        )
        if len(grew) + steady >= MIN_GROWING * len(pairs):
            return dim, cap
    return None


#: consecutive steps growing by one that make a run of a decoding loop without a cache
MIN_RUN = 8


def growing_runs(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The steps of the runs of at least MIN_RUN consecutive steps whose input grows by one
    along one dimension from each to the next (a generation without a cache between others).

    Example:
        >>> cached = [{"index": i, "input_shape": [1, 1]} for i in range(20)]
        >>> growing = [{"index": 20 + i, "input_shape": [1, 9 + i]} for i in range(20)]
        >>> len(growing_runs(cached + growing)), growing_runs(cached) == []
        (20, True)
    """
    runs: list[list[Mapping[str, Any]]] = []
    current: list[Mapping[str, Any]] = []
    for a, b in zip(steps, steps[1:]):
        grew = b.get("index", 0) == a.get("index", 0) + 1 and growing_dimension(
            [(a["input_shape"], b["input_shape"])]) is not None  # fmt: skip
        if grew:
            current = current or [a]
            current.append(b)
        elif current:
            runs.append(current)
            current = []
    runs.append(current)
    return [s for run in runs if len(run) >= MIN_RUN for s in run]


def _robust_fit(points: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """:func:`_fit`, refitted once without the points far off the first line (over 4 scaled
    median absolute deviations of the residuals: a step that waited on the machine, a
    collection), so a few slow steps do not hide the growth.

    Example:
        >>> points = [(float(x), 1.0 + 0.1 * x) for x in range(20)] + [(5.0, 40.0)]
        >>> [round(v, 3) for v in _robust_fit(points)]
        [1.0, 0.1, 1.0]
    """
    base, slope, _ = _fit(points)
    residuals = [y - base - slope * x for x, y in points]
    ordered = sorted(abs(r - sorted(residuals)[len(residuals) // 2]) for r in residuals)
    spread = 1.4826 * ordered[len(ordered) // 2]
    if spread <= 0:
        return _fit(points)
    center_residual = sorted(residuals)[len(residuals) // 2]
    kept = [p for p, r in zip(points, residuals) if abs(r - center_residual) <= 4 * spread]
    return _fit(kept) if len(kept) >= MIN_STEPS else _fit(points)


def _t_statistic(correlation: float, n: int) -> float:
    """The fitted slope over its standard error, from the correlation of ``n`` points.

    Example:
        >>> round(_t_statistic(0.35, 567), 1), _t_statistic(1.0, 10)
        (8.9, inf)
    """
    if n <= 2 or correlation <= 0:
        return 0.0
    if correlation >= 1.0:
        return float("inf")
    return correlation * ((n - 2) / (1.0 - correlation**2)) ** 0.5


def _fit(points: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``: ``(a, b, correlation)``."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    syy = sum((y - my) ** 2 for _, y in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    if sxx <= 0 or syy <= 0:
        return my, 0.0, 0.0
    b = sxy / sxx
    return my - b * mx, b, sxy / (sxx * syy) ** 0.5


def _working_ms(step: Mapping[str, Any]) -> float:
    """A step's wall time less its waits for a core (``session_read.wait_ms``, where the host
    thread's times were read): on a busy host the time a step spends runnable but off a core
    depends on the neighbours, not on its input's length, and would drown the slope.

    Example:
        >>> _working_ms({"wall_ms": 9.0, "cpu_ms": 3.0, "cpu_wait_ms": 5.0})
        4.0
        >>> _working_ms({"wall_ms": 9.0})
        9.0
    """
    wall = float(step["wall_ms"])
    return wall - wait_ms(step) if host_steps([step]) else wall


def _waits_note(waited_ms: float, count: int) -> str:
    """The evidence's note on the waits for a core left out of the fit (none when they were
    negligible: under 0.01 ms a step)."""
    if waited_ms <= 0.01 * count:
        return ""
    return f", their {fmt_ms(waited_ms / count)} a step waiting for a core left out"


def decode_without_cache(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when an inference loop's input grows by a token per step (see the module
    docstring).

    Example:
        >>> decode_without_cache({})  # (a session without the evidence this rule reads)
        []
    """
    if (session.get("config") or {}).get("step_boundary") != "module":
        return []
    steps = sorted(
        (s for s in session.get("steps") or () if isinstance(s.get("input_shape"), list)),
        key=lambda s: s.get("index", 0),
    )
    if len(steps) < MIN_STEPS:
        return []
    consecutive = [
        (a["input_shape"], b["input_shape"])
        for a, b in zip(steps, steps[1:])
        if b.get("index", 0) == a.get("index", 0) + 1
    ]
    dim, cap, share = growing_dimension(consecutive), None, 1.0
    if dim is None:
        window = sliding_window(consecutive)
        if window is None:  # (a cached generate, then one without a cache: half the steps)
            run = growing_runs(steps)
            if len(run) < MIN_STEPS:
                return []
            share, steps = len(run) / len(steps), run
            consecutive = [(a["input_shape"], b["input_shape"]) for a, b in zip(run, run[1:])
                           if b.get("index", 0) == a.get("index", 0) + 1]  # fmt: skip
            dim = growing_dimension(consecutive)
            if dim is None:
                return []
        else:
            dim, cap = window
    light = [s for s in steps if not s.get("detailed", True)]
    sample = light if len(light) >= MIN_LIGHT else steps
    points = [(float(s["input_shape"][dim]), _working_ms(s)) for s in sample]
    waited = sum(float(s["wall_ms"]) for s in sample) - sum(y for _, y in points)
    base, slope, correlation = _robust_fit(points)
    mean_length = sum(x for x, _ in points) / len(points)
    step = step_ms(session)
    saving = slope * (mean_length - 1.0) * share  # (per step of the run: the growing ones')
    sure = correlation >= MIN_CORRELATION or _t_statistic(correlation, len(points)) >= MIN_T
    if slope <= 0 or not sure or step <= 0 or saving < 0.02 * step:
        return []
    saving = min(saving, 0.9 * step)
    longest = max(int(x) for x, _ in points)
    attention = _attention_own_ms(session.get("tree"))
    low = max(0.5 * saving, saving - attention) if attention is not None else 0.5 * saving
    window_note = []
    if cap is not None:  # the steps at the cap need a sliding-window cache (positions shift)
        at_cap = sum(1 for x, _ in points if int(x) == cap) / len(points)
        growing = [x for x, _ in points if int(x) < cap]
        low = 0.5 * min(saving, slope * sum(x - 1.0 for x in growing) / len(points))
        window_note = [
            f"{100 * at_cap:.0f}% of the steps feed back the last {cap} tokens (the input "
            f"cropped to {cap}): there a plain cache is exact only with relative positions "
            "(RoPE, ALiBi: a rolling cache) or if generation stops or restarts at the block "
            "size; with absolute position embeddings (nanoGPT's wpe) every token's position "
            "shifts when the window slides, so the low end counts the growing steps only"
        ]
    return [
        Advice(
            rule="decode-without-cache",
            title=("Cache keys and values across decoding steps" if attention is not None
                   else "Carry the model's state across decoding steps")  # (a recurrent or
            + f": each step re-runs the model over every earlier token (up to {longest})",  # SSM)
            estimated_saving_ms=low,
            saving_range_ms=[low, saving],
            confidence="medium",
            evidence=[
                f"the outermost module's input grows by one along dimension {dim} from a step "
                f"to the next (length {int(min(x for x, _ in points))} to {longest}, mean "
                f"{mean_length:.0f}): an autoregressive loop feeding the whole sequence back",
                f"step time = {fmt_ms(base)} + {fmt_ms(slope)} per token of input (least "
                f"squares over {len(points)} {'light ' if sample is light else ''}steps"
                f"{_waits_note(waited, len(points))}, "
                f"correlation {correlation:.2f}, the slope "
                f"{_t_statistic(correlation, len(points)):.0f} standard errors from zero)",
                f"with a cache each step processes one new token: at most {fmt_ms(saving)} per "
                f"step ({pct(saving, step):.0f}%), at least {fmt_ms(low)}"
                f"{' on the growing steps' if cap is not None else ''} (attention still reads "
                "the cached keys: " + (
                    f"the attention modules' own time is {fmt_ms(attention)} a step)"
                    if attention is not None else "half, with no attention module seen)"),
                *window_note,
                *([f"{len(steps)} of the run's {round(len(steps) / share)} steps "
                   f"({100 * share:.0f}%) decode so, in runs of {MIN_RUN} or more growing "
                   "steps; the others do not (a generation that kept a cache, the prompts): "
                   "the saving is per step of the whole run"]
                  if share < 1.0 else []),
            ],
            fix=("" if attention is not None else _STATE_FIX)
            + "Keep each layer's keys and values from earlier steps (a KV cache) and feed "
            "only the new token: Hugging Face models do it with use_cache=True / "
            "past_key_values (model.generate does by default); in a hand-written GPT, return "
            "k and v from each attention layer, concatenate the new token's to them, and pass "
            "the positions of the new token. Short of a cache, apply the output layer and its "
            "softmax to the last position only, the one the loop reads (nanoGPT's "
            "self.lm_head(x[:, [-1], :]) at inference; pytorch/examples' word_language_model "
            "generate.py spent 34% of its step in log_softmax over every position).",
            references=["KV cache", "transformers: past_key_values"],
            code="logits = model(idx)                       # before: the whole sequence\n"
            "logits, cache = model(idx[:, -1:], cache)  # after: the new token and the cache",
            heat=min(1.0, saving / step),
            cause="kv-cache",
        )
    ]


#: the fix's first words where no attention module ran (mamba-minimal's generate: a
#: state-space model, told "keep a KV cache")
_STATE_FIX = (
    "No attention module ran: for a recurrent or state-space model (an RNN, Mamba, RWKV) keep "
    "each layer's state from the last step (its hidden state, and a Mamba block's convolution "
    "window and SSM state) and feed only the new token, the model's step-by-step form. For "
    "attention written without modules: "
)


def _attention_own_ms(tree: Mapping[str, Any] | None) -> float | None:
    """Per step, the (self) time of the outermost modules named for attention (their scores,
    softmax and weighted sum; their projections are child modules); None when there is none.

    Example:
        >>> proj = {"kind": "module", "name": "wq", "type": "Linear", "total_ms": {"mean": 3.0}}
        >>> attn = {"kind": "module", "name": "attention", "type": "Attention",
        ...         "total_ms": {"mean": 4.0}, "children": [proj]}
        >>> _attention_own_ms({"kind": "root", "children": [{"kind": "module", "name": "layers",
        ...     "type": "Block", "total_ms": {"mean": 9.0}, "children": [attn]}]})
        1.0
    """
    if not tree:
        return None
    found: list[float] = []
    stack = list(tree.get("children") or ())
    while stack:
        node = stack.pop()
        if node.get("kind") not in ("module", "region"):
            continue  # (a (self) row)
        if node.get("kind") == "module" and _ATTENTION.search(
                f"{node.get('type') or ''} {node.get('name') or ''}"):  # fmt: skip
            parts = sum(node_ms(c) for c in node.get("children") or () if c.get("kind") != "self")
            found.append(max(0.0, node_ms(node) - parts))
        else:
            stack.extend(node.get("children") or ())
    return sum(found) if found else None
