"""Lines of the ``other`` phase: what the loop does between the optimizer step and the next
forward (checkpoints written, ``gc.collect()``, logging, metrics), sampled.

The hot lines (``collect/lines.py``) time torch calls and the Python between them on one line;
work that makes no torch call (``torch.save``'s pickling and file write, a garbage collection,
a metrics library) is invisible to them, and lands in the step's ``other`` phase. In the
detailed steps that time hot lines (``collect/schedule.py`` LINES_EVERY: the lines' handler
takes the ticks that fall in torch calls), while the phase is ``other``, a CPU-time interval timer (``ITIMER_PROF``, every
``INTERVAL_S``) interrupts the training loop's thread; the handler charges the thread's CPU
time since the previous tick to the first user frame on the stack (``collect/lines_frames.py``:
a call into a library is charged to the user line that made it). A long C call (pickling a
checkpoint) delays the tick until it returns, and the CPU time it took still goes to the line
that made it. Waiting (a sleep, a blocking read) uses no CPU and is charged to no line, so the
lines may explain less than the phase's wall time; they never blame a line for another's wait.

A collection the cyclic garbage collector starts on its own (an allocation past its threshold)
runs in whatever line allocates: its time is charged to no line (``gc.callbacks``), as the
profiler's own objects make such pauses come at other moments than in a plain run (nlp-tutorial's
Seq2Seq: one or two full collections of 50-95 ms fell in 181 detailed steps, read as 0.86 ms a
step, 7% of it, on ``hidden = torch.zeros(1, batch_size, n_hidden)``, a 2 us line). A
``gc.collect()`` the script calls is its line's work, and stays charged to it.

Safe by construction: only on the main thread of a POSIX process whose SIGPROF handler is the
default (a script or tool using SIGPROF itself keeps it), with ``SA_RESTART`` so a system call
the tick interrupts is restarted, and the timer stopped outside the ``other`` phase and light
steps, and not at all once torch.distributed is initialized (a tick must never interrupt a
collective's wait). Forked children do not inherit interval timers.

The same ticks run in the ``forward`` phase of detailed steps, where they see what neither the
module tree nor the hot lines time: Python outside any torch call and any module (an RL
environment's ``env.step``, tokenizing in the loop, NumPy post-processing). There a tick is
charged only when no frame on the stack is torch's or the profiler's: a tick that falls during
a module's forward or a torch function written in Python (``torch.distributions``) has a torch
frame; one that falls during a C torch call made from a user line is taken in the hot lines'
handler once the call returns (a profiler frame). Those ticks go to ``python_lines``.

Example:
    >>> sampler = OtherPhaseSampler()
    >>> sampler.start()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import gc
import linecache
import os
import signal
import sys
import threading
import time
from typing import Any

from torchdoctor.collect.lines_frames import COLLECT, LIBRARY, PROFILER, USER, in_torch, kind_of
from torchdoctor.collect.other_chains import loop_depth, loop_lines
from torchdoctor.collect.source_lines import periodic_gate

#: seconds of process CPU time between ticks (about 1% of the phase's time in the handler)
INTERVAL_S = 0.002
#: torch's Optimizer.step wrapper (its hooks run inside it)
_OPTIMIZER_FILE = os.path.join("torch", "optim", "optimizer.py")
#: at most this much of the ``other`` segments no tick fell in goes with the next tick's line:
#: more is many intervals' worth of work no tick saw, no sample of that line's (minimalRL's
#: DQN: an episode's 81.6 ms of environment steps between policy calls went to the first line
#: of the next update, `random.sample(self.buffer, n)`, and 29.5 ms to `loss.backward()`)
MAX_PENDING_NS = int(2 * INTERVAL_S * 1e9)
#: the phases ticked: every line in ``other``; Python outside torch and modules in ``forward``
SAMPLED_PHASES = ("other", "forward")
#: library frames kept per tick of the ``other`` phase (a library's training loop is deep)
MAX_CHAIN = 24
#: library functions remembered as the forward's entry path
MAX_FORWARD_FUNCTIONS = 256


class OtherPhaseSampler:
    """Samples the user lines of the ``other`` phase, and the Python outside torch of the
    ``forward`` phase, in detailed steps (see the module docstring). ``take_step()`` returns
    ``({(file, line, function, via): ns}, {...})`` for the step: the ``other`` phase's lines and
    the forward phase's Python lines (``via``: the library frames below the line, outermost
    first, as ``(file, line, function)``: every one of them in the ``other`` phase, the
    innermost alone in the forward phase; None when the line made no library call)."""

    def __init__(self, forward_functions: set[tuple[str, str]] | None = None) -> None:
        # (file, function) of the library frames the forward is entered through (filled here)
        self.forward_functions = forward_functions if forward_functions is not None else set()
        self.enabled = False  # installed (main thread, default SIGPROF handler)
        self.detailed = False  # the current step is detailed (its ``other`` phase is ticked)
        self.forward_too = False  # ... and times hot lines (its forward's Python is ticked too)
        self.sampling = False  # the current phase is one whose ticks are charged
        self.pending = 0  # ns of ``other`` segments since the last tick, charged with it
        self.ticking = False
        self.phase = "other"
        self.last = 0
        self.collected = 0  # ns of automatic collections since the last tick, charged to none
        self._collecting_since: int | None = None
        self.lines: dict[tuple[str, int, str, Any], int] = {}
        self.python: dict[tuple[str, int, str, Any], int] = {}
        self._previous: Any = None

    def start(self) -> bool:
        """Install the handler when it is safe (see the module docstring)."""
        if self.enabled:
            return True
        if os.name != "posix" or not hasattr(signal, "SIGPROF"):
            return False
        if threading.current_thread() is not threading.main_thread():
            return False
        if signal.getsignal(signal.SIGPROF) not in (signal.SIG_DFL, None):
            return False  # the script or another tool samples with SIGPROF itself
        self._previous = signal.signal(signal.SIGPROF, self._tick)
        signal.siginterrupt(signal.SIGPROF, False)  # SA_RESTART: interrupted calls resume
        gc.callbacks.append(self._collection)
        self.enabled = True
        return True

    def close(self) -> None:
        self._stop()
        if self.enabled:
            self.enabled = False
            if self._collection in gc.callbacks:
                gc.callbacks.remove(self._collection)
            if signal.getsignal(signal.SIGPROF) == self._tick:
                signal.signal(signal.SIGPROF, self._previous or signal.SIG_DFL)

    def phase_changed(self, phase: str) -> None:
        """Tick in the SAMPLED_PHASES of detailed steps only; the time since the last tick is
        the phase's that ends (charged to no line: a sample is the interval before a tick).
        The timer runs on through the step's other phases (their ticks charge nothing): a loop
        that switches phases every few hundred microseconds (stable-baselines3's rollouts:
        an environment step, a policy call) would otherwise restart it before it ever fired."""
        if self.ticking:
            self._charge(None)
        if phase == "forward" and self.phase == "other" and self.detailed and self.enabled:
            self._note_forward_entry()
        self.phase = phase
        self.sampling = phase == "other" or (phase in SAMPLED_PHASES and self.forward_too)
        if self.detailed and self.enabled:
            if self.sampling and not self.ticking and (
                    signal.getsignal(signal.SIGPROF) == self._tick):  # fmt: skip
                self.last = time.thread_time_ns()
                signal.setitimer(signal.ITIMER_PROF, INTERVAL_S, INTERVAL_S)
                self.ticking = True
        elif self.ticking:
            self._stop()

    def _note_forward_entry(self) -> None:
        """The library functions the forward is entered through (a Trainer's loop, its
        training_step): the deepest of them on an ``other`` tick's stack is the loop's own
        function, whose lines that tick's time goes to (collect/other_chains.py)."""
        frame = sys._getframe(1)
        functions = self.forward_functions
        while frame is not None and len(functions) < MAX_FORWARD_FUNCTIONS:
            code = frame.f_code
            kind = kind_of(code)
            if kind == USER:
                break
            if kind == LIBRARY:
                functions.add((code.co_filename, code.co_name))
            frame = frame.f_back

    def step_began(self, detailed: bool, phase: str, timing: bool | None = None) -> None:
        """A step begins: the ``other`` phase of a detailed step is ticked (every detailed
        step: a short loop's own work between steps, stable-baselines3's rollouts beside a 2 ms
        update, needs more than the steps that time lines), the forward's Python only in steps
        that time lines (``timing``; default: ``detailed``)."""
        # (not under torch.distributed: a tick must never interrupt a collective's wait)
        self.detailed = detailed and not _distributed()
        self.forward_too = self.detailed and (detailed if timing is None else timing)
        if self.ticking:  # (since take_step: the profiler closing the step, no line's time)
            self.last, self.collected = time.thread_time_ns(), 0
        self.phase_changed(phase)

    def take_step(self) -> tuple[dict[tuple[str, int, str, Any], int], dict[tuple, int]]:
        """This step's two tables (fresh ones for the next): the ``other`` phase's lines and
        the forward phase's Python lines."""
        if self.ticking:  # (the time since the last tick is the profiler's, closing the step
            self.last, self.collected = time.thread_time_ns(), 0  # at an optimizer step: charged to no line; as
            # pending, slow_train.py's `optimizer.step()` line collected 1 ms a step of it)
        lines, self.lines = self.lines, {}
        python, self.python = self.python, {}
        return lines, python  # (pending segments go with the next detailed step's first tick)

    def _stop(self) -> None:
        if self.ticking:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            self.ticking = False
            self._charge(None)

    def _collection(self, phase: str, info: dict[str, Any]) -> None:
        """``gc.callbacks``: time an automatic collection while ticking (not one the script's
        line asks for: ``gc.collect()`` in the loop is its work)."""
        if phase == "start":
            self._collecting_since = None
            if self.ticking and not _asked(sys._getframe(1)):
                self._collecting_since = time.thread_time_ns()
        elif self._collecting_since is not None:
            self.collected += time.thread_time_ns() - self._collecting_since
            self._collecting_since = None

    def _tick(self, signum: int, frame: Any) -> None:
        if self.ticking:
            self._charge(frame)

    def _charge(self, frame: Any) -> None:
        now = time.thread_time_ns()
        spent, self.last = now - self.last, now
        spent, self.collected = max(0, spent - self.collected), 0  # (the collector's: no line's)
        if not self.sampling:  # (backward, the optimizer, data: the timer runs on, unused)
            return
        if self.phase != "other":
            if frame is not None:
                self._charge_python(frame, spent)
            return
        if frame is None:  # (the phase ends between ticks: its time goes with the next tick's
            self.pending += spent  # line, as a sample of the phase's work; a loop switching
            return  # phases every few hundred microseconds charged almost nothing otherwise)
        chain = []  # the library frames below the user's line, innermost first (a Trainer's)
        while frame is not None:
            kind = kind_of(frame.f_code)
            if kind == USER:
                break
            if kind == PROFILER or frame.f_code.co_filename.startswith(COLLECT):
                return  # torchdoctor's own bookkeeping, the sync audit's modes (transparent to
                # the lines, which look through them for the user's): the profiler's, no line's
            if frame.f_code.co_filename.endswith(_OPTIMIZER_FILE):  # (the tail of
                return  # optimizer.step() after its hooks: the optimizer's, no line's; with the
                # pending segments, slow_train.py's `optimizer.step()` line collected 1 ms)
            if kind == LIBRARY:
                chain.append((frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_name))
            frame = frame.f_back
        if frame is None:
            return  # no user frame: charged to no line
        spent, self.pending = spent + min(self.pending, MAX_PENDING_NS), 0
        code = frame.f_code
        # outermost first, at most MAX_CHAIN frames (the innermost kept: where the time goes)
        if len(chain) > MAX_CHAIN:
            chain = [chain[0], *chain[-(MAX_CHAIN - 1) :]]
        key = (code.co_filename, frame.f_lineno or 0, code.co_name, tuple(reversed(chain)) or None)
        self.lines[key] = self.lines.get(key, 0) + spent


    def _charge_python(self, frame: Any, spent: int) -> None:
        """A forward-phase tick: charged to the first user frame when nothing on the stack is
        torch's, nor the profiler's below that frame (see the module docstring)."""
        line = via = None
        while frame is not None:
            code = frame.f_code
            if in_torch(code):
                return
            kind = kind_of(code)
            if line is None:
                if code.co_filename.startswith(COLLECT):  # the profiler's or the sync audit's
                    return  # handlers (outer frames of collect/ are `run`'s runner)
                if kind == USER:
                    line = frame
                elif kind == LIBRARY and via is None:
                    via = (code.co_filename, frame.f_lineno or 0, code.co_name)
            frame = frame.f_back
        if line is not None:
            code = line.f_code
            key = (code.co_filename, line.f_lineno or 0, code.co_name, via and (via,))
            self.python[key] = self.python.get(key, 0) + spent


def _asked(frame: Any) -> bool:
    """Whether the frame a collection started in asked for it (its line calls ``collect(``:
    ``gc.collect()``, ``import gc as g; g.collect()``), not an allocation past the threshold.

    Example:
        >>> import sys
        >>> _asked(sys._getframe()), _asked(None)  # (this line has no call of that name)
        (False, False)
    """
    if frame is None:
        return False
    return ".collect(" in linecache.getline(frame.f_code.co_filename, frame.f_lineno or 0)


#: lines kept in session["other_lines"] (the heaviest)
MAX_LINES = 20


def other_lines_section(
    steps: list[dict[str, Any]],
    field: str = "other_lines",
    forward_functions: set[tuple[str, str]] | frozenset = frozenset(),
) -> list[dict[str, Any]] | None:
    """``session["other_lines"]``: per user line sampled in the ``other`` phase of the
    detailed steps, its mean ms per step (over those steps), heaviest first; None when nothing
    was sampled. With ``field="python_lines"``: ``session["python_lines"]``, the same for the
    forward phase's Python outside torch.

    Example:
        >>> steps = [{"other_lines": {("/w/t.py", 9, "<module>", None): 4_000_000}}, {}]
        >>> other_lines_section(steps)[0]["ms_per_step"], other_lines_section(steps)[0]["location"]
        (2.0, 't.py:9')
        >>> for s in steps: s["phases"] = {"other": 0.5}  # (a tick carried an earlier step's time)
        >>> other_lines_section(steps)[0]["ms_per_step"]  # no more than the phase took
        0.5
    """
    if not steps or not any(s.get(field) for s in steps):
        return None
    totals: dict[tuple[str, int, str], int] = {}
    vias: dict[tuple[str, int, str], dict[tuple, int]] = {}
    chains: dict[tuple[str, int, str], dict[tuple, int]] = {}
    seen: dict[tuple[str, int, str], set[int]] = {}  # the steps each line was sampled in
    for index, step in enumerate(steps):
        for (file, line, function, via), ns in (step.get(field) or {}).items():
            key = (file, line, function)
            totals[key] = totals.get(key, 0) + ns
            seen.setdefault(key, set()).add(index)
            if via is not None:  # library frames below the line, outermost first
                mine = chains.setdefault(key, {})
                mine[via] = mine.get(via, 0) + ns
                innermost = vias.setdefault(key, {})
                innermost[via[-1]] = innermost.get(via[-1], 0) + ns
    # The ticks carry the phase's time since the last charged one (collect: `pending`), from an
    # earlier step too: one left out of these (an outlier) could put more on their lines than
    # the phase took in them (a DataLoader's first fetch read 155% of the step): fitted to it
    phase = "other" if field == "other_lines" else "forward"
    budget = 1e6 * sum(float((s.get("phases") or {}).get(phase) or 0.0) for s in steps)
    charged = sum(totals.values())
    scale = budget / charged if 0 < budget < charged else 1.0
    rows = []
    for (file, line, function), ns in sorted(totals.items(), key=lambda kv: -kv[1])[:MAX_LINES]:
        ns = ns * scale
        through = [(where, v * scale) for where, v in sorted(
            vias.get((file, line, function), {}).items(), key=lambda kv: -kv[1])]  # fmt: skip
        rows.append({
            "file": file, "line": line, "function": function,
            "location": f"{os.path.basename(file)}:{line}",
            "code": linecache.getline(file, line).strip() if line else "",
            "ms_per_step": ns / len(steps) / 1e6,
            # (sampled in few of them: periodic or one-off work, DCGAN's sample images at
            # iteration 0 of an epoch, in the first detail window by chance)
            "steps_seen": len(seen[(file, line, function)]), "steps_sampled": len(steps),
            # (the `if step % N == 0` around it in the source: work of some steps only)
            **({"gate": gate} if (gate := periodic_gate(file, line)) else {}),
            "via": [{"file": f, "line": n, "function": name, "ms_per_step": v / len(steps) / 1e6}
                    for (f, n, name), v in through[:3]],
        })  # fmt: skip
        mine = chains.get((file, line, function), {})
        # (the forward phase's ticks keep only their innermost library frame: no loop to find)
        inside = loop_lines(mine, forward_functions) if field == "other_lines" else []
        if inside:  # the library's lines below this one (its loop's own work)
            for row in inside:
                row["ms_per_step"] = row.pop("share") * ns / len(steps) / 1e6
            rows[-1]["inside"] = inside
            if loop_depth(mine, forward_functions) is not None:
                # the forward is entered through the same library frames: this line runs a
                # library's training loop (`trainer.train()`), the work is the loop's
                rows[-1]["encloses_loop"] = True
    return rows


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()
