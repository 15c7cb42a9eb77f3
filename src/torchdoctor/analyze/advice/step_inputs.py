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
    for step in long:
        index = int(step.get("index", 0))
        extra = sorted(set(step.get("outer_modules") or ()) - common) if common else []
        for name in extra:
            modules.setdefault(name, []).append(index)
        shape = tuple(step.get("input_shape") or ())
        if typical is not None and shape and shape != typical:
            shapes.setdefault(shape, []).append(index)
        if extra or (typical is not None and shape and shape != typical):
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
    if shapes and typical is not None:
        larger = all(prod(s) > prod(typical) for s in shapes)
        listed = ", ".join(_shape(s) for s in list(shapes)[:3])
        parts.append(f"{'longer' if larger else 'other'} inputs ({listed} against "
                     f"{_shape(typical)})")  # fmt: skip
        at = sorted(i for found in shapes.values() for i in found)
        evidence.append(
            f"{len(at)} of the {len(long)} long steps ({_indices(at)}) "
            f"start{'s' if len(at) == 1 else ''} with an input of "
            f"{listed}, a typical step with {_shape(typical)}"
            + (": a prompt's first pass over all its tokens, before one token a step"
               if larger else "")  # fmt: skip
        )
    if after:
        evidence.append(
            f"{len(after)} of the {len(long)} long steps ({_indices(after)}) come right after "
            "one of those: the first step on its output (a decoder's first step computes the "
            "cross-attention keys and values of a new encoder output)"
        )
    whole = len(explained) + len(after) == len(long)
    return ModelWork(" and ".join(parts), evidence, explains_all=whole)


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
