"""Reading a Session: the one home of the helpers every layer uses to read its plain data.

pyinstrument keeps its frame helpers on the frame; torchdoctor's Session is plain JSON data, so
its helpers live here, beside ``session.py``: the phase names, the typical value of a Stat,
step and node times, tree walking, quantiles and the millisecond format of reports and advice.
collect/, analyze/ and render/ all import them from here (nothing here imports them back).

Example:
    >>> session = {"step_ms": {"median": 8.0, "mean": 10.0}, "tree": None}
    >>> step_ms(session), fmt_ms(step_ms(session))
    (10.0, '10 ms')
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The phases of a step, in the order reports show them (``session["phases"]`` keys).
PHASES = ("data", "forward", "backward", "optimizer", "other")
#: the end of a TorchScript module's type ("Sequential (TorchScript)": its parts unseen)
TORCHSCRIPT = " (TorchScript)"


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty sequence (``q`` in [0, 1]; any order).

    Example:
        >>> quantile([4.0, 1.0, 3.0, 2.0], 0.5), quantile([1.0, 2.0, 3.0], 0.25)
        (2.5, 1.5)
    """
    if not values:
        raise ValueError("quantile of an empty sequence; pass at least one value")
    ordered = sorted(float(v) for v in values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(stat: Any) -> float:
    """The median of a Stat dict (0.0 when absent); a bare number is returned as is.

    Example:
        >>> median({"median": 3.0}), median(None), median(2)
        (3.0, 0.0, 2.0)
    """
    if isinstance(stat, Mapping):
        value = stat.get("median")
        return float(value) if isinstance(value, (int, float)) else 0.0
    if isinstance(stat, (int, float)) and not isinstance(stat, bool):
        return float(stat)
    return 0.0


def center(stat: Any) -> float:
    """The typical value of a Stat: its ``mean`` when recorded (means add up across a tree, as
    the tree renderer shows them), else its ``median``; a bare number is returned as is.

    Example:
        >>> center({"median": 3.0, "mean": 3.5}), center({"median": 3.0}), center(None)
        (3.5, 3.0, 0.0)
    """
    if isinstance(stat, Mapping):
        value = stat.get("mean")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return median(stat)


def step_ms(session: Mapping[str, Any]) -> float:
    """The typical step time (see :func:`center`): ``step_ms``, else the tree root's total, else 0.

    Example:
        >>> step_ms({"step_ms": {"median": 5.0}})
        5.0
    """
    value = center(session.get("step_ms"))
    if value > 0:
        return value
    root = session.get("tree") or {}
    return center(root.get("total_ms")) or center(root.get("forward_ms"))


def tree_step_ms(session: Mapping[str, Any]) -> float:
    """The time of the steps the module tree and the phases describe: with detail windows that
    left light steps out (``config.detail``), the tree root's total (the detailed steps, whose
    hooks make them slower than light ones); else :func:`step_ms`. Shares of tree and phase
    figures are of this time.

    Example:
        >>> windowed = {"step_ms": {"median": 5.0}, "tree": {"total_ms": {"median": 8.0}},
        ...             "config": {"steps": 100, "detail": {"detailed_count": 10}}}
        >>> tree_step_ms(windowed), tree_step_ms({"step_ms": {"median": 5.0}})
        (8.0, 5.0)
    """
    config = session.get("config") or {}
    detailed = (config.get("detail") or {}).get("detailed_count")
    steps = config.get("steps") or len(session.get("steps") or ())
    root = center((session.get("tree") or {}).get("total_ms"))
    if isinstance(detailed, int) and 0 < detailed < steps and root > 0:
        return root
    return step_ms(session)


def saving_step_ms(session: Mapping[str, Any]) -> float:
    """The step time a saving is stated against: :func:`tree_step_ms` less the profiler's own
    cost in those steps (``config.profiler_overhead.overhead_ms``: measured as detailed minus
    light steps, else calibrated), at least a quarter of it. Shares are read off the detailed
    steps; what a remedy saves is of the step as it runs without the profiler (makemore's GRU
    cell: a 28.6 ms detailed step, 14.1 ms of it the profiler's, a 14.6 ms light step).

    Example:
        >>> saving_step_ms({"step_ms": {"median": 28.6},
        ...                 "config": {"profiler_overhead": {"overhead_ms": 14.1}}})
        14.5
        >>> saving_step_ms({"step_ms": {"median": 10.0}})
        10.0
    """
    step = tree_step_ms(session)
    overhead = ((session.get("config") or {}).get("profiler_overhead") or {}).get("overhead_ms")
    if step <= 0 or not isinstance(overhead, (int, float)) or overhead <= 0:
        return step
    return round(max(0.25 * step, step - float(overhead)), 9)


def node_ms(node: Mapping[str, Any]) -> float:
    """A node's inclusive time per step (forward + backward), see :func:`center`.

    Example:
        >>> node_ms({"total_ms": {"median": 4.0}})
        4.0
    """
    total = center(node.get("total_ms"))
    if total > 0:
        return total
    return center(node.get("forward_ms")) + center(node.get("backward_ms"))


def walk(node: Mapping[str, Any] | None, depth: int = 0) -> Iterator[tuple[Any, int]]:
    """Every node of a tree with its depth, parents before children (nothing for ``None``).

    Example:
        >>> [(n["path"], d) for n, d in walk({"path": "", "children": [{"path": "a"}]})]
        [('', 0), ('a', 1)]
    """
    if not node:
        return
    yield node, depth
    for child in node.get("children") or ():
        yield from walk(child, depth + 1)


def fmt_ms(value: float | None) -> str:
    """A time in ms with 3 significant digits, for reports and advice ('-' when unknown).

    Example:
        >>> fmt_ms(134.01), fmt_ms(0.3912), fmt_ms(1234.5), fmt_ms(None)
        ('134 ms', '0.391 ms', '1,234 ms', '-')
    """
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f} ms"
    return f"{value:.3g} ms"


def fmt_count(value: float | None) -> str:
    """A count or rate for people: 3 significant digits, no exponent, no trailing zeros.

    Example:
        >>> fmt_count(6.357142857), fmt_count(0.17857142857142858), fmt_count(1234.0), fmt_count(4)
        ('6.36', '0.179', '1,234', '4')
    """
    if value is None:
        return "?"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def step_count(session: Mapping[str, Any]) -> int:
    """Steps profiled: the length of ``steps``, or when a long run's session lists only a
    sample of them (``config.step_records``, see ``collect/step_store.py``) how many were seen.

    Example:
        >>> long_run = {"config": {"step_records": {"seen": 1000000}}, "steps": [{}] * 3}
        >>> step_count(long_run), step_count({"steps": [{}] * 3}), step_count({})
        (1000000, 3, 0)
    """
    records = (session.get("config") or {}).get("step_records") or {}
    seen = records.get("seen")
    return int(seen) if isinstance(seen, int) else len(session.get("steps") or [])


def incomplete_text(session: Mapping[str, Any]) -> str | None:
    """A warning line when the session is a checkpoint of a run that had not ended (a run
    killed by SIGKILL leaves its last one), else None.

    Example:
        >>> incomplete_text({"config": {"incomplete": True,
        ...                             "checkpoint": {"steps": 4, "elapsed_s": 12.0}}})
        'incomplete: a checkpoint written 12 s into a run that had not ended; it holds profiled steps 0-3 (4 steps)'
    """
    config = session.get("config") or {}
    if not config.get("incomplete"):
        return None
    checkpoint = config.get("checkpoint") or {}
    steps = int(checkpoint.get("steps") or 0)
    held = f"profiled steps 0-{steps - 1} ({steps} steps)" if steps else "no profiled step"
    elapsed = checkpoint.get("elapsed_s")
    when = f" written {fmt_count(elapsed)} s into" if isinstance(elapsed, (int, float)) else " of"
    return f"incomplete: a checkpoint{when} a run that had not ended; it holds {held}"


#: the longest exception line quoted (a message can be a page: the traceback has it all)
MAX_ERROR_CHARS = 240
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _exception_line(lines: list[str]) -> str:
    """The exception's own line (``UnpicklingError: Weights only load failed. ...``): the first
    line not indented after the last traceback frame, not the message's last line (torch.load's
    ends in "Check the documentation ..."); the only line of a one-line error.

    Example:
        >>> _exception_line(['Traceback (most recent call last):', '  File "t.py", line 2, in f',
        ...                  '    load()', 'ValueError: bad file', 'see the docs'])
        'ValueError: bad file'
        >>> _exception_line(["UnpicklingError: failed, \x1b[1mdo those steps\x1b[0m. Check"])
        'UnpicklingError: failed, do those steps. Check'
    """
    if not lines:
        return "an exception"
    frames = [i for i, line in enumerate(lines) if line.strip().startswith('File "')]
    after = lines[frames[-1] + 1 :] if frames else lines
    text = next(
        (line for line in after if not line[:1].isspace()), after[-1] if after else lines[-1]
    )
    text = _ANSI.sub("", text).strip()  # (torch.load's message sets bold with escape codes)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def error_text(session: Mapping[str, Any]) -> str | None:
    """One line naming the exception the profiled code raised and the user's line it came
    from (the innermost frame outside installed packages and torch), else None.

    Example:
        >>> tb = chr(10).join(['Traceback (most recent call last):',
        ...     '  File "/w/train.py", line 4, in <module>', '    loss = model(x)',
        ...     '  File "/v/site-packages/torch/nn/modules/linear.py", line 134, in forward',
        ...     'RuntimeError: mat1 and mat2 shapes cannot be multiplied'])
        >>> error_text({"error": tb, "steps": []})
        'the script raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (train.py:4), before a step was complete: the figures are of what ran before it'
        >>> tb = tb.replace("/v/site-packages/torch/nn/modules/linear.py", "/usr/lib/python3.11/threading.py")
        >>> "(train.py:4)" in error_text({"error": tb, "steps": []})
        True
        >>> error_text({"error": "terminated by signal 15 (SIGTERM) at /w/t.py:9", "steps": [{}]})
        'the script was terminated by signal 15 (SIGTERM) at /w/t.py:9, after 1 profiled steps: the figures are of what ran before it'
        >>> sampled = {"config": {"step_records": {"seen": 2011}}, "steps": [{}] * 810}
        >>> error_text({**sampled, "error": "KeyError: 'final_observation'"})[-64:]
        'after 2011 profiled steps: the figures are of what ran before it'
    """
    error = session.get("error")
    if not error:
        return None
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    last = _exception_line(lines)
    where = ""
    for line in lines:
        text = line.strip()
        if text.startswith('File "') and ", line " in text:
            file = text[len('File "') :].split('"', 1)[0]
            parts = file.replace("\\", "/").split("/")
            if "site-packages" in parts or "dist-packages" in parts or file.startswith("<"):
                continue
            if any(a == "lib" and re.fullmatch(r"python\d+(\.\d+)?", b) for a, b in zip(parts, parts[1:])):
                continue  # (the standard library: a Ctrl-C in threading.py's wait, under a compile)
            number = text.split(", line ", 1)[1].split(",", 1)[0]
            where = f" ({os.path.basename(file)}:{number})"
    steps = step_count(session)  # (a long run lists a sample of its steps)
    whole = (session.get("config") or {}).get("step_boundary") == "whole_run"
    when = "before a step was complete" if whole or not steps else f"after {steps} profiled steps"
    what = "was" if last.startswith(("terminated by signal", "interrupted")) else "raised"
    return f"the script {what} {last}{where}, {when}: the figures are of what ran before it"


def no_advice_text(session: Mapping[str, Any]) -> str:
    """What a report says when no advice was found: that no rule found a problem, or, when the
    script stopped before its first step was complete, that there was nothing to judge.

    Example:
        >>> no_advice_text({"steps": [{}]})
        'No rule found a problem worth fixing.'
        >>> no_advice_text({"error": "ImportError: no module x", "steps": []})[:40]
        'No advice: the script stopped before its'
    """
    whole = (session.get("config") or {}).get("step_boundary") == "whole_run"
    if session.get("error") and (whole or not session.get("steps")):
        return ("No advice: the script stopped before its first step was complete (the error "
                "above), so there was no step to judge; fix it and run again.")  # fmt: skip
    return "No rule found a problem worth fixing."


def installed_package(path: str | None) -> str | None:
    """The installed package a recorded file belongs to (the folder under site-packages or
    dist-packages), or None for the user's own files.

    Example:
        >>> installed_package("/venv/lib/python3.11/site-packages/transformers/models/gpt2.py")
        'transformers'
        >>> installed_package("/home/me/train.py") is None
        True
    """
    text = str(path or "").replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in text:
            name = text.rsplit(marker, 1)[1].split("/", 1)[0]
            return name[:-3] if name.endswith(".py") else name or None
    return None


def compiled_output(path: str | None) -> bool:
    """Python that torch.compile wrote (Inductor's output code, in its cache directory:
    ``/tmp/torchinductor_<user>/`` or ``$TORCHINDUCTOR_CACHE_DIR``): its lines are the
    compiled graph's kernels, not the user's; the user line calling the compiled function
    gets their time.

    Example:
        >>> compiled_output("/tmp/torchinductor_me/cb/cbnttj42shwl6flsk.py")
        True
        >>> compiled_output("/home/me/torchinductor_notes.py")
        False
    """
    path = str(path or "")
    folders = path.replace("\\", "/").split("/")[:-1]
    if any(part.startswith("torchinductor_") for part in folders):
        return True
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return bool(cache) and path.startswith(os.path.abspath(cache) + os.sep)


def attention_dims(call: Mapping[str, Any]) -> tuple[int, int, int]:
    """(batch, queries, keys) of a recorded ``nn.MultiheadAttention`` call (a tree node's
    ``attention``: its query and key shapes, ``batch_first``; unbatched calls are batch 1).

    Example:
        >>> attention_dims({"query": [10, 2, 8], "key": [20, 2, 8], "batch_first": False})
        (2, 10, 20)
        >>> attention_dims({"query": [10, 8], "key": [20, 8]})
        (1, 10, 20)
    """
    q, k = call["query"], call["key"]
    if len(q) != 3:  # unbatched: (L, E), (S, E)
        return 1, q[0], k[0]
    return (q[0], q[1], k[1]) if call.get("batch_first") else (q[1], q[0], k[0])


def dropout_in_training(call: Mapping[str, Any]) -> bool:
    """A recorded attention call ran its dropout (training, p > 0).

    Example:
        >>> dropout_in_training({"training": True, "dropout": 0.1}), dropout_in_training({})
        (True, False)
    """
    return bool(call.get("training")) and float(call.get("dropout") or 0.0) > 0


#: share of the steps' wall time the profiled thread waited for a core that makes the run's
#: figures inflated by the machine (the ``cpu-contention`` advice and the headline's caveat)
CONTENTION_SHARE = 0.10
#: steps with the thread's figures needed to say so
CONTENTION_STEPS = 5


@dataclass
class HostSplit:
    """Where some steps' wall time went (``steps[i].cpu_ms``, ``cpu_wait_ms``: the profiled
    thread on a core, ready with no core free; the rest blocked).

    Example:
        >>> HostSplit(10.0, 6.0, 3.0).blocked_ms
        1.0
    """

    wall_ms: float
    cpu_ms: float
    wait_ms: float

    @property
    def blocked_ms(self) -> float:
        return max(0.0, self.wall_ms - self.cpu_ms - self.wait_ms)


def host_steps(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The steps that carry the thread's run-queue wait (Linux; steps cut in its thread).

    Example:
        >>> len(host_steps([{"wall_ms": 1.0, "cpu_ms": 1.0, "cpu_wait_ms": 0.0}, {"wall_ms": 1.0}]))
        1
    """
    return [s for s in steps if s.get("cpu_wait_ms") is not None and s.get("cpu_ms") is not None]


def wait_ms(step: Mapping[str, Any]) -> float:
    """A step's run-queue wait, at most its time off a core (``wall_ms - cpu_ms``): Linux 6.12+
    (EEVDF's delayed dequeue) can credit a wait late, past the step it happened in (measured
    here on 6.18 beside busy processes: 4.8 ms of wait in a 1.5 ms step spent on a core).

    Example:
        >>> wait_ms({"wall_ms": 1.5, "cpu_ms": 1.5, "cpu_wait_ms": 4.8}), wait_ms({"wall_ms": 9.0, "cpu_ms": 3.0, "cpu_wait_ms": 5.0})
        (0.0, 5.0)
    """
    off_core = max(0.0, float(step["wall_ms"]) - float(step["cpu_ms"]))
    return min(float(step["cpu_wait_ms"]), off_core)


def host_split(steps: Sequence[Mapping[str, Any]]) -> HostSplit:
    """The summed :class:`HostSplit` of ``steps`` (those without the figures left out).

    Example:
        >>> host_split([{"wall_ms": 4.0, "cpu_ms": 3.0, "cpu_wait_ms": 0.5}] * 2)
        HostSplit(wall_ms=8.0, cpu_ms=6.0, wait_ms=1.0)
    """
    rows = host_steps(steps)
    return HostSplit(
        sum(float(s["wall_ms"]) for s in rows),
        sum(float(s["cpu_ms"]) for s in rows),
        sum(wait_ms(s) for s in rows),
    )


def contention_share(session: Mapping[str, Any]) -> float | None:
    """The share of the steps' wall time the profiled thread waited for a CPU core, when it is
    at least :data:`CONTENTION_SHARE` over at least :data:`CONTENTION_STEPS` steps; else None.

    Example:
        >>> steps = [{"wall_ms": 10.0, "cpu_ms": 6.0, "cpu_wait_ms": 4.0}] * 5
        >>> contention_share({"steps": steps}), contention_share({"steps": steps[:4]})
        (0.4, None)
    """
    steps = host_steps(session.get("steps") or ())
    total = host_split(steps)
    if len(steps) < CONTENTION_STEPS or total.wall_ms <= 0.0:
        return None
    share = total.wait_ms / total.wall_ms
    return share if share >= CONTENTION_SHARE else None
