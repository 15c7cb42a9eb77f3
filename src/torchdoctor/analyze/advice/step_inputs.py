"""What long steps of an inference loop run that a typical step does not: more of the model.

When steps are cut at outermost module calls (an inference loop), each step records the shape
of its first call's input (``steps[i].input_shape``) and, where it called other outermost
modules than most steps (``config.outer_modules``), those (``steps[i].outer_modules``). A long
step that called another module (Whisper's ``AudioEncoder``, once per 30 s segment, before the
``TextDecoder``'s token steps) or ran on another input (the segment's prompt of 3 tokens,
against one token a step) is the model's own work, not work between steps: the periodic-steps
rule says so instead of guessing an evaluation or a checkpoint.

Example:
    >>> steps = [{"index": i, "input_shape": [1, 1]} for i in range(8)]
    >>> steps[5] = {"index": 5, "input_shape": [1, 1], "outer_modules": ["Enc", "Dec"]}
    >>> steps[6] = {"index": 6, "input_shape": [1, 3]}
    >>> work = model_work({"steps": steps, "config": {"outer_modules": ["Dec"]}}, steps[5:7])
    >>> work.title
    "Enc's calls and longer inputs ([1, 3] against [1, 1])"
    >>> work.explains_all
    True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

from torchdoctor.analyze.advice.base import fmt_ms


@dataclass
class ModelWork:
    """What a set of long steps ran beyond a typical step's work, in the advice's words.

    Example:
        >>> ModelWork("Enc's calls", ["step 5 calls Enc"], explains_all=False).title
        "Enc's calls"
    """

    title: str
    evidence: list[str] = field(default_factory=list)
    #: every long step called another module or ran on another input
    explains_all: bool = False
    #: the fix when it explains them all
    fix: str = ""
    #: the long steps it explains (their index)
    steps: frozenset[int] = frozenset()

    def rest_extra(self, long: Sequence[Mapping[str, Any]], median: float) -> float:
        """The time over ``median`` of the ``long`` steps it does not explain, summed.

        Example:
            >>> work = ModelWork("batches", steps=frozenset({1}))
            >>> work.rest_extra([{"index": 0, "wall_ms": 9.0}, {"index": 1, "wall_ms": 60.0}], 5.0)
            4.0
        """
        return sum(
            max(0.0, float(s["wall_ms"]) - median)
            for s in long
            if int(s.get("index", 0)) not in self.steps
        )


def _typical_shape(steps: Sequence[Mapping[str, Any]]) -> tuple[int, ...] | None:
    """The input shape most steps' first outermost call had, or None without any.

    Example:
        >>> _typical_shape([{"input_shape": [1, 1]}, {"input_shape": [1, 1]}, {}])
        (1, 1)
    """
    shapes = Counter(tuple(s["input_shape"]) for s in steps if s.get("input_shape"))
    return shapes.most_common(1)[0][0] if shapes else None


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def model_work(
    session: Mapping[str, Any], long: Sequence[Mapping[str, Any]]
) -> ModelWork | None:
    """What the ``long`` steps (``session["steps"]`` records) ran that a typical step does
    not: other outermost modules, inputs of another shape; None when none of them did.
    """
    common = set((session.get("config") or {}).get("outer_modules") or ())
    typical = _typical_shape(session.get("steps") or ())
    modules: dict[str, list[int]] = {}
    shapes: dict[tuple[int, ...], list[int]] = {}
    explained, after = set(), []  # (after: the long steps right after an explained one)
    seen = Counter(tuple(s.get("input_shape") or ()) for s in session.get("steps") or ())
    in_long = Counter(tuple(s.get("input_shape") or ()) for s in long)
    for step in long:
        index = int(step.get("index", 0))
        extra = sorted(set(step.get("outer_modules") or ()) - common) if common else []
        for name in extra:
            modules.setdefault(name, []).append(index)
        shape = tuple(step.get("input_shape") or ())
        other = typical is not None and shape != typical and _explains(shape, seen, in_long)
        if other:
            shapes.setdefault(shape, []).append(index)
        if extra or other:
            explained.add(index)
        elif index - 1 in explained and modules:
            after.append(index)  # (T5's first decoder step on a new encoder output)
    if not modules and not shapes:
        return None
    parts, evidence = [], []
    if modules:
        names = sorted(modules, key=lambda n: -len(modules[n]))[:3]
        parts.append(" and ".join(names) + "'s calls")
        for name in names:
            at = modules[name]
            evidence.append(
                f"{len(at)} of the {len(long)} long steps ({_indices(at)}) "
                f"call{'s' if len(at) == 1 else ''} {name}, which "
                f"a typical step does not (it calls {', '.join(sorted(common))})"
            )
    batched = None
    if shapes and typical is not None:
        larger = all(prod(s) > prod(typical) for s in shapes)
        order = sorted(shapes, key=lambda s: -len(shapes[s]))  # (the most long steps first)
        listed = ", ".join(_shape(s) for s in order[:3])
        at = sorted(i for found in shapes.values() for i in found)
        batched = _batched(session, long, shapes, typical)
        kind = "larger batches" if batched else "longer inputs" if larger else "other inputs"
        parts.append(f"{kind} ({listed} against {_shape(typical)})")
        evidence.append(
            f"{len(at)} of the {len(long)} long steps ({_indices(at)}) "
            f"start{'s' if len(at) == 1 else ''} with an input of "
            f"{listed}, a typical step with {_shape(typical)}"
            + (batched or (": a prompt's first pass over all its tokens, before one token a step"
                           if larger else ""))  # fmt: skip
        )
    if after:
        evidence.append(
            f"{len(after)} of the {len(long)} long steps ({_indices(after)}) come right after "
            "one of those: the first step on its output (a decoder's first step computes the "
            "cross-attention keys and values of a new encoder output)"
        )
    whole = len(explained) + len(after) == len(long)
    fix = BATCHED_FIX if batched and not modules else MODEL_WORK_FIX
    return ModelWork(" and ".join(parts), evidence, explains_all=whole, fix=fix,
                     steps=frozenset(explained | set(after)))  # fmt: skip


def _explains(shape: tuple[int, ...], seen: Counter, in_long: Counter) -> bool:
    """Whether a long step's first input ``shape`` can explain its length: most of the run's
    steps on that shape are long ones (``seen``: every step's shapes counted; ``in_long``: the
    long steps'). A text of 11 tokens that ran in a typical time in 20 other steps does not:
    a pipeline's one-text calls vary in length around the typical one.

    Example:
        >>> seen, in_long = Counter({(1, 11): 25, (32, 25): 16}), Counter({(1, 11): 2})
        >>> in_long[(32, 25)] = 16
        >>> [_explains(shape, seen, in_long) for shape in [(1, 11), (32, 25), ()]]
        [False, True, False]
    """
    return bool(shape) and 2 * in_long[shape] > seen[shape]


def _batched(
    session: Mapping[str, Any],
    long: Sequence[Mapping[str, Any]],
    shapes: Mapping[tuple[int, ...], Sequence[int]],
    typical: tuple[int, ...],
) -> str:
    """When every other input is a larger batch (a larger leading dimension, same rank): their
    time per sample against a typical step's, in words ('' otherwise). A text-classification
    pipeline called on one text at a time, then on the list with batch_size=32: its 19 batched
    calls were told as 'other inputs ([1, 11], [1, 10], [1, 13] against [1, 12])'.

    Example:
        >>> steps = [{"index": i, "wall_ms": 6.0, "input_shape": [1, 12]} for i in range(9)]
        >>> long = [{"index": 9, "wall_ms": 64.0, "input_shape": [32, 25]}]
        >>> text = _batched({"steps": steps + long}, long, {(32, 25): [9]}, (1, 12))
        >>> text.split(": ")[1], text.split(": ")[2][:44]
        ('batches of 32 samples against 1', '2 ms a sample against 6 ms in a typical step')
        >>> text.endswith("(batched, the model costs less per sample)")
        True
    """
    if any(len(s) != len(typical) or s[0] <= typical[0] for s in shapes):
        return ""
    walls = sorted(float(s.get("wall_ms") or 0.0) for s in session.get("steps") or ())
    batch = [s for s in long if int(s.get("index", -1)) in {i for v in shapes.values() for i in v}]
    samples = sum(int((s.get("input_shape") or (1,))[0]) for s in batch)
    if not walls or not samples or typical[0] <= 0:
        return ""
    each = sum(float(s.get("wall_ms") or 0.0) for s in batch) / samples
    typical_each = walls[len(walls) // 2] / typical[0]
    sizes = sorted({s[0] for s in shapes}, reverse=True)
    text = (
        f": batches of {' and '.join(str(n) for n in sizes[:2])} samples against "
        f"{typical[0]}: {fmt_ms(each)} a sample against {fmt_ms(typical_each)} in a typical step"
    )
    if each < typical_each:
        text += " (batched, the model costs less per sample)"
    return text


def _indices(at: Sequence[int]) -> str:
    """'steps 3, 9, 15, ...' (at most four).

    Example:
        >>> _indices([3]), _indices([1, 2, 3, 4, 5])
        ('step 3', 'steps 1, 2, 3, 4, ...')
    """
    shown = ", ".join(str(i) for i in at[:4]) + (", ..." if len(at) > 4 else "")
    return f"step{'s' if len(at) > 1 else ''} {shown}"


#: the fix when every long step is more of the model's own work
MODEL_WORK_FIX = (
    "These steps run more of the model than a typical step (an encoder run once per input "
    "before a decoder's steps, a prompt's first pass before one token a step): the work "
    "itself, not work between steps; the tree and the median step leave it out. To see inside "
    "it, `torchdoctor run --detail always` records every step in full (or profile those calls "
    "on their own); to make it cheaper, batch it: encode several inputs per call, prefill "
    "several prompts at once."
)

#: the fix when every long step is a larger batch than a typical step's
BATCHED_FIX = (
    "These steps run the model on larger batches than a typical step: the work itself, not "
    "work between steps, and no saving from running them less often. Where a larger batch "
    "costs less per sample, the typical steps are the ones to batch."
)
