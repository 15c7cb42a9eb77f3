"""One advice per cause: entries about the same source line or the same remedy become one.

Rules look at one kind of evidence each (the tree, the sync audit, hot lines, lint findings), so
two of them can find the same thing: a ``.item()`` line is a sync record *and* a TD201 finding;
``torch.compile`` is the remedy of a dominant layer stack *and* an engine knob. Entries that
share a location (``Advice.locations``, compared as the same file and line) or a ``cause`` are
merged: the strongest entry (first in ranked order) keeps its title, fix and code (a hot line
with no cure of its own takes them from the entry that names a remedy); the merged
entry gathers the evidence, references and locations of all of them and keeps the largest
saving (with its confidence) and heat: the same cause is not saved twice; an entry stating
only a bound (a CPU knob's "up to") above the merged range raises the range's top. A weaker entry that
bundles several lines (the host-syncs advice) and shares only some of them hands those lines
over to the stronger entry and keeps the rest, so no line is named by two entries.

Example:
    >>> from torchdoctor.analyze.advice.base import Advice
    >>> a = Advice("host-syncs", "Keep scalars on the device", locations=["t.py:3"], heat=0.5)
    >>> b = Advice("lint", "TD201 .item() in a loop", locations=["/p/t.py:3"], evidence=["x"])
    >>> [(m.title, m.evidence) for m in one_per_cause([a, b])]
    [('Keep scalars on the device', ['x', 'also found by: lint'])]
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

from torchdoctor.analyze.advice.backward import RATIO_NOTE
from torchdoctor.analyze.advice.base import (
    CONFIDENCES,
    TYPICAL_BACKWARD_FORWARD_RATIO,
    Advice,
    same_file,
    split_location,
)
from torchdoctor.analyze.advice.hot_lines import NO_CURE_FIX
from torchdoctor.analyze.advice.hot_lines_cures import PER_ELEMENT_LOOP
from torchdoctor.analyze.advice.lint_groups import COLD_NOTE, FEW_SYNCS_NOTE, NEGLIGIBLE_NOTE
from torchdoctor.session_read import fmt_ms


def _keys(advice: Advice) -> list[tuple]:
    """What an entry is about: its source lines (by file name and line) and its cause."""
    keys: list[tuple] = []
    single = getattr(advice, "location", None)  # a rule may name one line only
    for text in [*advice.locations, *([single] if isinstance(single, str) else [])]:
        file, line = split_location(text)
        if line is not None:
            keys.append(("line", os.path.basename(file), line, file))
    if advice.cause:
        keys.append(("cause", advice.cause))
    return keys


def _same(a: tuple, b: tuple) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "cause":
        return a == b
    return a[1:3] == b[1:3] and same_file(a[3], b[3])


def _shared(item: Advice, target: Advice) -> tuple[list[tuple], list[tuple]]:
    """``item``'s keys that ``target`` also has, and the rest."""
    theirs = _keys(target)
    shared, rest = [], []
    for key in _keys(item):
        (shared if any(_same(key, other) for other in theirs) else rest).append(key)
    return shared, rest


def _hand_over(item: Advice, target: Advice, lines: list[tuple]) -> None:
    """Move ``lines`` (and the evidence and code lines naming them) from ``item`` to
    ``target``: a bundle of lines (the host-syncs advice) gives up the lines that a stronger
    advice explains, and keeps the others."""
    tags = [f"{key[1]}:{key[2]}" for key in lines]
    names = [text for text in item.evidence if any(tag in text for tag in tags)]
    target.evidence.extend(e for e in names if e not in target.evidence)
    item.evidence = [e for e in item.evidence if e not in names]
    item.evidence.append(
        f"{len(lines)} of these line(s) belong to the advice {target.title!r} (one advice per line)"
    )
    wanted = {(key[1], key[2]) for key in lines}
    moved = [
        loc
        for loc in item.locations
        if (os.path.basename(split_location(loc)[0]), split_location(loc)[1]) in wanted
    ]
    item.locations = [loc for loc in item.locations if loc not in moved]
    target.locations.extend(loc for loc in moved if loc not in target.locations)
    if item.code:
        item.code = "\n".join(
            line for line in item.code.splitlines() if not any(tag in line for tag in tags)
        )


def _direction(advice: Advice) -> bool:
    """An entry whose fix is a general direction and whose saving an assumption about a line
    it names: a layer's backward brought back to twice its forward, a composite "start at its
    heaviest line and compile it"; a specific cure of that line replaces both."""
    return advice.rule == "backward-heavy" or (
        advice.rule == "dominant-module" and advice.cause == "torch.compile" and bool(advice.locations)
    )


def _specific_first(entries: list[Advice]) -> list[Advice]:
    """``entries`` with a hot line's specific cure first when the strongest entry only gives a
    direction (:func:`_direction`): Mamba's scan layer "backward 9x its forward: stop
    differentiating" and its line's "unbind the tensor once" are one cause, told by the cure."""
    if not _direction(entries[0]):
        return entries
    cured = next(
        (e for e in entries[1:] if e.rule == "hot-line"
         and e.fix not in (NO_CURE_FIX, PER_ELEMENT_LOOP.fix)),
        None,
    )  # fmt: skip
    return entries if cured is None else [cured, *(e for e in entries if e is not cured)]


def _top(advice: Advice) -> float:
    """The top of ``advice``'s stated saving: its range's, else its estimate, else 0."""
    return (advice.saving_range_ms or [0.0, advice.estimated_saving_ms or 0.0])[1]


def _bottom(advice: Advice) -> float:
    """The bottom of ``advice``'s stated saving: its range's, else its estimate, else 0."""
    return (advice.saving_range_ms or [advice.estimated_saving_ms or 0.0])[0]


def _merged(entries: list[Advice]) -> Advice:
    entries = _specific_first(entries)
    first = entries[0]
    specific = next((e for e in entries[1:] if e.fix and e.fix != NO_CURE_FIX), None)
    if first.fix == NO_CURE_FIX and specific is not None:
        # a hot line without a cure of its own takes the remedy another rule names for it
        # (a known torch sync, a library switch); its measured share stays in the evidence
        first.title, first.fix, first.code = specific.title, specific.fix, specific.code
    elif first.fix == PER_ELEMENT_LOOP.fix:  # lines of one loop: the specific cure first
        cured = next(
            (e for e in entries[1:]
             if e.fix not in (NO_CURE_FIX, first.fix) and not _direction(e)),
            None,
        )  # fmt: skip
        if cured is not None:
            first.fix = f"{cured.fix} Then batch the rest of the loop: {first.fix}"
            first.code = cured.code or first.code
        if first.cause and first.cause.startswith("loop "):
            file, line = split_location(first.cause[len("loop ") :])
            body = {split_location(loc)[1] for e in entries for loc in e.locations}
            lines = ", ".join(str(n) for n in sorted(n for n in body if n is not None))
            first.evidence.insert(
                0, f"one Python loop ({os.path.basename(file)}:{line}), lines {lines} of its body"
            )
    upper = 0.0  # the backward-heavy layers' assumed savings, when a line's cure leads
    for other in entries[1:]:  # (copies: the rules' own entries stay as they were)
        # (a cold lint finding joining measured advice: the measurement is the other rule's)
        cold = other.rule == "lint" and other.heat <= 0 and first.heat > 0
        # (its "under 1%" is of the line's torch calls; the other rule measured the line's
        # whole time: a torch.load between steps)
        found = (f"the linter found the same cause ({', '.join(other.references)})"
                 if not other.cause or other.cause == first.cause else  # (TD604's KV cache
                 f"the linter also flags this line ({', '.join(other.references)})")  # joining
        # the advice to batch nanoGPT's sequences: another cause on the same line)
        evidence = [
            e.replace(COLD_NOTE, found).replace(NEGLIGIBLE_NOTE, found).replace(
                FEW_SYNCS_NOTE, found) if cold else e
            for e in other.evidence
        ]
        assumed = _direction(other) and first.estimated_saving_ms is not None
        if assumed and other.rule == "backward-heavy":
            upper += other.estimated_saving_ms or 0.0
            evidence = [e for e in evidence if e != RATIO_NOTE]
        if first.rule == "loop-invariant" and other.rule == "lint":  # (TD601: the loop's line
            first.evidence.insert(2, other.title)  # that calls it, the one to move: shown)
            first.locations[:0] = [loc for loc in other.locations if loc not in first.locations]
        elif first.rule == "periodic-steps" and other.rule == "lint" and other.evidence:
            # (TD602 on the evaluation loop the long steps ran: its line and cure come first)
            first.evidence.insert(2, other.evidence[0])
            at = ", ".join(f"{os.path.basename(split_location(loc)[0])}:{split_location(loc)[1]}"
                           for loc in other.locations)  # fmt: skip
            first.fix = f"At {at}: {other.fix}. {first.fix}"
            first.locations[:0] = [loc for loc in other.locations if loc not in first.locations]
        first.evidence.extend(e for e in evidence if e not in first.evidence)
        first.references.extend(r for r in other.references if r not in first.references)
        first.locations.extend(loc for loc in other.locations if loc not in first.locations)
        # (a line's or a module's own advice joined by the generic knob of the same remedy,
        # "torch.compile the model": the title is the line's, so the saving stays the line's;
        # the whole model's is stated beside it: mnist's `x = F.relu(x)`, 4.4 ms, read 5.9-21.6)
        whole = other.generic and not first.generic and bool(first.locations)
        if whole and other.estimated_saving_ms:
            low, high = other.saving_range_ms or [other.estimated_saving_ms] * 2
            first.evidence.append(f"applied to the whole model ({other.title}): {fmt_ms(low)} "
                                  f"to {fmt_ms(high)} per step expected")  # fmt: skip
        elif not assumed and (other.estimated_saving_ms or 0.0) > (first.estimated_saving_ms or 0.0):
            # the confidence goes with the saving it qualifies
            first.estimated_saving_ms = other.estimated_saving_ms
            first.saving_range_ms = other.saving_range_ms
            first.confidence = other.confidence
        elif (not assumed and not whole and other.estimated_saving_ms is None
              and other.saving_range_ms and other.saving_range_ms[1] > _top(first)):
            # a bound only (a CPU knob's "up to": channels_last over a MobileNet's depthwise
            # convolutions) above the first's range: the range reaches it, the estimate stays
            first.saving_range_ms = [_bottom(first), other.saving_range_ms[1]]
        elif first.estimated_saving_ms is None and CONFIDENCES.index(
            other.confidence
        ) < CONFIDENCES.index(first.confidence):
            first.confidence = other.confidence
        first.heat = max(first.heat, other.heat)
        first.generic = first.generic and other.generic
    _add_up_lines(first, entries)
    low, high = first.saving_range_ms or [first.estimated_saving_ms or 0.0] * 2
    if upper > high:  # (the line's measured time leaves out work autograd does between its
        # graph nodes, such as summing the gradients of a tensor used many times)
        first.saving_range_ms = [low, upper]
        first.evidence.append(
            f"up to {fmt_ms(upper)} if the layers' backward falls to ~"
            f"{TYPICAL_BACKWARD_FORWARD_RATIO:g}x their forward: the line's measured backward "
            "leaves out what autograd does between graph nodes (summing the gradients of a "
            "tensor used many times)"
        )
    also = sorted({e.rule for e in entries[1:]} - {first.rule})
    if also:
        first.evidence.append("also found by: " + ", ".join(also))
    return first


def _add_up_lines(first: Advice, entries: list[Advice]) -> None:
    """Findings of one lint code on different lines, each with its own measured saving (GCN's
    two ``test(...)`` calls read only when printing, TD712 on lines 181 and 182), save their
    sum when each line is fixed: ``first`` takes it when it is more than its own."""
    by_code: dict[str, dict[str, Advice]] = {}
    for entry in entries:
        if entry.rule == "lint" and entry.estimated_saving_ms and entry.locations:
            by_code.setdefault(entry.references[0], {}).setdefault(entry.locations[0], entry)
    for code, lines in by_code.items():
        if len(lines) < 2:
            continue
        total = sum(e.estimated_saving_ms or 0.0 for e in lines.values())
        high = sum((e.saving_range_ms or [0.0, e.estimated_saving_ms])[1] for e in lines.values())
        low_now, high_now = first.saving_range_ms or [first.estimated_saving_ms or 0.0] * 2
        if high <= high_now:
            continue
        if total > (first.estimated_saving_ms or 0.0):
            first.estimated_saving_ms = total
        first.saving_range_ms = [max(total, low_now), high]
        places = ", ".join(f"{os.path.basename(split_location(loc)[0])}:{split_location(loc)[1]}"
                           for loc in sorted(lines))  # fmt: skip
        first.evidence.append(
            f"the {len(lines)} {code} lines together ({places}): {fmt_ms(total)} to "
            f"{fmt_ms(high)} per step when each is fixed"
        )


def one_per_cause(advice: Sequence[Advice]) -> list[Advice]:
    """Merge entries about the same line or cause; order is kept (strongest first).

    ``advice`` should be ranked already. Each entry, strongest first, joins the first kept
    entry it shares a cause or a line with: wholly when all its lines are that entry's (or the
    cause is the same), else it hands over the shared lines and stays with the rest. The
    entries passed in are not modified.

    Example:
        >>> from torchdoctor.analyze.advice.base import Advice
        >>> items = [Advice("dominant-module", "compile the stack", cause="torch.compile"),
        ...          Advice("engine-knobs", "torch.compile the model", cause="torch.compile"),
        ...          Advice("lint", "TD302", locations=["a.py:4"])]
        >>> [a.title for a in one_per_cause(items)]
        ['compile the stack', 'TD302']
    """
    for item in advice:
        if item.confidence not in CONFIDENCES:
            raise ValueError(
                f"advice {item.title!r} has confidence {item.confidence!r}; expected one of "
                f"{CONFIDENCES}"
            )
    kept: list[Advice] = []
    groups: dict[int, list[Advice]] = {}  # id(kept entry) -> entries merged into it
    for original in advice:
        item = copy.deepcopy(original)
        merged = handed = False
        for target in kept:
            shared, rest = _shared(item, target)
            if not shared:
                continue
            same_cause = any(key[0] == "cause" for key in shared)
            if same_cause or not [key for key in rest if key[0] == "line"]:
                if handed:  # what is left of a bundle: only the evidence about its own lines
                    tags = [f"{key[1]}:{key[2]}" for key in _keys(item) if key[0] == "line"]
                    item.evidence = [e for e in item.evidence if any(t in e for t in tags)]
                groups[id(target)].append(item)
                merged = True
                break
            _hand_over(item, target, [key for key in shared if key[0] == "line"])
            handed = True
        if not merged:
            kept.append(item)
            groups[id(item)] = [item]
    return [_merged(groups[id(item)]) for item in kept]
