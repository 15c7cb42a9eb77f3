"""When the profiler records full detail: every step, or bounded windows.

Full detail (module tree forward and backward, activation bytes, recomputation, the sync
audit) costs hooks on every module call. With ``detail="windows"`` (the default) it is
recorded for ``window`` steps after warm-up, then for ``window`` steps once per
``period_steps`` steps or ``period_s`` seconds, whichever comes first: each later window opens
after a delay drawn from a fixed seed (up to half the period's steps), so work a loop does at
round step counts (an evaluation every 100 steps, a checkpoint every 500) is sampled as often
as it happens, not caught by every window; the steps in between are *light*: step
time only, and run without module hooks (their mere presence costs every module call), so their
phases do not tell forward from ``other``; the Session's phases come from the detailed steps.
``detail="always"`` records every step in full, but for one *control* step in each block of
CONTROL_EVERY from step CONTROL_FROM on (its place in the block drawn from a fixed seed, so
work done every k-th step is not missed every time): with no light step, the session could not
measure what detail costs, only add up calibrated parts, which undercount (they are calibrated
warm, in tight loops). Short profiles (under CONTROL_FROM steps) are detailed throughout.
Warm-up steps are detailed (they register the modules, so a window's first step does not pay
for it).

Periodic long steps (an evaluation every 20 steps) rarely fall in a window of 5 every 100
steps, so their lines would go unnamed. The schedule watches the light steps' times
(:meth:`DetailSchedule.observe`): once two light steps at least LONG_STEP x the median light
step, and alike in length (LIKE_RATIO: a stall on a busy host is no evaluation), came a gap
of P steps apart, the step P after the last one is *aimed at*: detailed on
its own (a window of one), at most MAX_AIMED times in a run and no more once one was long.
A long detailed step is left out of the tree, but the user lines its model calls ran under
are kept (``session["long_step_calls"]``): the periodic-steps advice names the evaluation.

A script whose steps change regime between windows (sentence-transformers' semantic search: a
corpus encoded in batches of 32, then queries one call each, ~12 ms against 30-450 ms) had only
its first phase in the tree and the lines: once the light steps' median moves PHASE_RATIO-fold
from what it was after the last window, a window opens at the next step (``phase_steps``).

Detail has a budget: a window due by its period waits while what the detailed steps after the
first window cost over light ones exceeds DETAIL_BUDGET of all the steps' time since then. A
window's cost is its steps' time less the light steps' median of its own phase: of the light
steps just before it or just after it, whichever is nearer the window's (a tutorial training a
teacher, then students: its teacher windows were weighed against the students' 20x shorter
steps, read as 130% overhead, and no window opened again: the tree was the teacher's alone). On steps of many small calls a detailed step costs 2-3x a light one (a tiny
Whisper decoding step: 5.5 against 1.7 ms), and a window of 5 every 100 steps would cost the
run ~10%; on a training step the hooks cost 10-40% and the budget changes nothing.

Example:
    >>> schedule = DetailSchedule("windows", window=2, period_steps=10, period_s=1e9)
    >>> [i for i in range(-1, 60) if schedule.detailed(i, now_s=0.0)]  # warm-up, then windows
    [-1, 0, 1, 11, 12, 21, 22, 31, 32, 42, 43, 54, 55]
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from typing import Any

DETAIL_MODES = ("windows", "always")
#: with ``detail="always"``, from step CONTROL_FROM one step in each block of CONTROL_EVERY is a
#: light *control* step: the session measures what detail costs against them
CONTROL_EVERY = 8
CONTROL_FROM = 16
#: module inputs are compared (recomputation) in one detailed step of FINGERPRINT_EVERY
FINGERPRINT_EVERY = 4
#: hot lines are timed in one detailed step of LINES_EVERY: a window's steps at even places
#: (its first included), an aimed step, every other step of ``detail="always"``; the lines are
#: the mean of the steps that timed them (a window's steps run the same code), and the other
#: detailed steps pay neither the function mode's dispatch nor the timing (on a small GPT
#: step, 0.3 and 0.4 of the detailed step's 1.6 ms extra)
LINES_EVERY = 2
#: a light step this many times the median light step, and LONG_EXCESS_NS past it, is long
#: (the periodic-steps rule's 2x and 5 ms: a hiccup of a step of 0.5 ms is no evaluation)
LONG_STEP, LONG_EXCESS_NS = 2.0, 5_000_000
#: light steps seen before a step can be called long; the median is of the last LIGHT_KEPT,
#: sorted anew every MEDIAN_EVERY
LONG_AFTER, LIGHT_KEPT, MEDIAN_EVERY = 8, 64, 16
#: long light steps kept to find a period among, and how far apart (excess over the median
#: light step) two of them may be to count as the same periodic work
LONG_KEPT, LIKE_RATIO = 8, 4.0
#: steps detailed on their own at a predicted long step, at most, in one run
MAX_AIMED = 3
#: detailed steps' extra time at most, as a share of all steps' time, when a window is due
DETAIL_BUDGET = 0.03
#: a new phase: the median of the last PHASE_PROBE light steps PHASE_RATIO times (or a
#: PHASE_RATIO-th of) the median of the first PHASE_PROBE light steps after a window; a window
#: opens at once (within the budget), at most MAX_PHASES times in a run
PHASE_PROBE, PHASE_RATIO, MAX_PHASES = 8, 2.0, 3


class DetailSchedule:
    """Decides, at the start of each step, whether it is detailed (see the module docstring).

    Example:
        >>> schedule = DetailSchedule("windows", window=1, period_steps=4, period_s=1e9)
        >>> [schedule.detailed(i, now_s=0.0) for i in range(5)]
        [True, False, False, False, True]
        >>> schedule.config()["mode"]
        'windows'
    """

    def __init__(
        self,
        mode: str = "windows",
        *,
        window: int = 5,
        period_steps: int = 100,
        period_s: float = 60.0,
        budget: float = DETAIL_BUDGET,
    ) -> None:
        if mode not in DETAIL_MODES:
            raise ValueError(
                f"detail must be one of {DETAIL_MODES}, got {mode!r}; 'windows' records the "
                "module tree in bounded windows, 'always' on every step"
            )
        if window < 1 or period_steps < window or period_s <= 0 or not 0 < budget <= 1:
            raise ValueError(
                f"need window >= 1, period_steps >= window, period_s > 0 and 0 < detail_budget "
                f"<= 1 (a share of the run; 1: windows never wait), got window={window}, "
                f"period_steps={period_steps}, period_s={period_s}, detail_budget={budget}"
            )
        self.mode = mode
        self.window = window
        self.period_steps = period_steps
        self.period_s = period_s
        self.budget = budget
        self.postponed = 0  # steps a due window waited for the budget
        self._config: dict[str, Any] = {}  # (config(): kept up to date, read at the end)
        self._spent = [0.0, 0.0]  # all steps' ns (after the first window), detailed steps' cost
        self._window_walls: list[float] = []  # the last window's detailed steps, unsettled
        self._around: list[float | None] = [None, None]  # light medians before / after it
        self._after: list[float] = []  # the light steps after it (its phase: PHASE_PROBE)
        self._draw = (-1, 0)  # (block, the place of its control step)
        self._start: int | None = None  # profiled step index the current window began at
        self._start_s = 0.0
        self._next: int | None = None  # the step the next window opens at, once drawn
        self._windows = 0  # windows opened after the first (seeds their delays)
        self._detailed_count = 0  # detailed profiled steps begun
        self._aimed_at: int | None = None  # the last aimed step (its index here)
        self._light: deque[float] = deque(maxlen=LIGHT_KEPT)  # recent light steps' times
        self._seen, self._median_at, self._median_cached = 0, None, 0.0  # (see _median)
        self._long: list[tuple[int, float]] = []  # the last long light steps: (index, excess)
        self._aim: int | None = None  # the step predicted to be long, detailed on its own
        self.aimed: list[int] = []  # steps detailed for that (config.detail.aimed_steps)
        self._caught = False  # an aimed step was long: aim no more
        self._detailed_walls: deque[float] = deque(maxlen=LIGHT_KEPT)  # windows' steps
        self._after_window: list[float] = []  # the first PHASE_PROBE light steps after one
        self._recent: deque[float] = deque(maxlen=PHASE_PROBE)  # the last light steps
        self.phases: list[int] = []  # steps a window opened at for a new phase

    def detailed(self, index: int, now_s: float, kept_as: int | None = None) -> bool:
        """Whether profiled step ``index`` (negative during warm-up) is detailed; ``kept_as``:
        the index its record will have (``aimed_steps`` lists those; partial steps dropped
        when the step boundary changed make the two differ).

        Example:
            >>> always = DetailSchedule("always")
            >>> all(always.detailed(i, 0.0) for i in range(16))  # short profiles: every step
            True
            >>> [sum(not always.detailed(i, 0.0) for i in range(b, b + 8)) for b in (16, 24, 32)]
            [1, 1, 1]
        """
        if index < 0:
            return True
        if self.mode == "always":
            return not self._control(index)
        if index == self._aim:
            self.aimed.append(index if kept_as is None else kept_as)
            self._aimed_at = index
            return True
        start = self._start
        if start is None or index < start:
            self._start, self._start_s = index, now_s
            return True
        if index - start < self.window:
            return True
        if self._next is None and (
            index - start >= self.period_steps or now_s - self._start_s >= self.period_s
        ):  # the period is over: the next window opens after a drawn delay (within budget)
            if self._over_budget():
                self.postponed += 1
                self._config["postponed_steps"] = self.postponed
                return False
            self._windows += 1
            room = (index - start) // 2  # at most half the period's steps later
            self._next = index + random.Random(f"window {self._windows}").randrange(room + 1)
        if self._next is not None and index >= self._next:
            self._start, self._start_s, self._next = index, now_s, None
            self._after_window.clear()
            self._recent.clear()
            return True
        return False

    def _new_phase(self, index: int, wall: float) -> None:
        """A light step of ``wall`` ns: open a window at the next step where the light steps'
        median moved PHASE_RATIO-fold since the last window (see the module docstring)."""
        if len(self._after_window) < PHASE_PROBE:
            self._after_window.append(wall)
            return
        self._recent.append(wall)
        if (len(self._recent) < PHASE_PROBE or self._next is not None
                or len(self.phases) >= MAX_PHASES):  # fmt: skip
            return
        before, now = statistics.median(self._after_window), statistics.median(self._recent)
        if min(before, now) > 0 and max(before, now) >= PHASE_RATIO * min(before, now):
            if self._over_budget():
                self.postponed += 1
                self._config["postponed_steps"] = self.postponed
                self._after_window[:] = self._recent  # (the new phase is the reference now)
                self._recent.clear()
                return
            self._next = index + 1
            self.phases.append(index + 1)

    def observe(self, index: int, wall: float, detailed: bool) -> None:
        """Profiled step ``index`` took ``wall`` ns of its own (the profiler passes its wall
        time less its thread's wait for a core: a busy host's stalls are no periodic work):
        aim a detailed step at the next long step once light long steps came at a regular gap
        (see the module docstring).

        Example:
            >>> schedule = DetailSchedule("windows", window=1, period_steps=100)
            >>> detailed = []
            >>> for i in range(80):
            ...     detailed.append(schedule.detailed(i, 0.0))
            ...     schedule.observe(i, 40e6 if i % 20 == 19 else 10e6, detailed[-1])
            >>> [i for i, d in enumerate(detailed) if d], schedule.aimed  # window, then aimed
            ([0, 59], [59])
        """
        if self.mode != "windows" or index < 0:
            return
        if index >= self.window:  # (the first window, with the first calls' work: free)
            self._spend(wall, detailed)
        if not detailed:
            self._new_phase(index, wall)
        if self._caught:
            return
        if detailed:
            if index != self._aim:
                self._detailed_walls.append(wall)
                return
            # long against the windows' detailed steps: on small steps the hooks alone make a
            # detailed step 2-3x a light one (stable-baselines3's PPO), which read as caught
            self._aim = None
            if len(self._detailed_walls) >= 3:
                typical = statistics.median(self._detailed_walls)
                self._caught = wall > LONG_STEP * typical and wall - typical > LONG_EXCESS_NS
            else:
                median = self._median()
                self._caught = median is not None and wall > 1.5 * LONG_STEP * median
            return
        median = self._median()
        self._light.append(wall)
        self._seen += 1
        if median is None or wall <= LONG_STEP * median or wall - median < LONG_EXCESS_NS:
            return
        excess = wall - median
        # the gap is taken between long steps alike (their excess within LIKE_RATIO) and none
        # far longer seen lately: on a busy host, stalls of 5 ms among evaluations of 40-90 ms
        # broke the pattern or made one of their own, and the aims went to stalls (a CI run's
        # evaluation every 20 steps was never detailed)
        like = [i for i, e in self._long if max(e, excess) <= LIKE_RATIO * min(e, excess)]
        longest = max((e for _, e in self._long), default=excess)
        self._long = [*self._long[-(LONG_KEPT - 1):], (index, excess)]
        if (not like or excess * LIKE_RATIO < longest or self._aim is not None
                or len(self.aimed) >= MAX_AIMED):  # fmt: skip
            return
        gap = index - like[-1]
        if gap >= 2 and (len(like) < 2 or like[-1] - like[-2] == gap):
            self._aim = index + gap

    def _over_budget(self) -> bool:
        """Whether the detailed steps so far cost more than ``budget`` of all steps' time.

        Example:
            >>> schedule = DetailSchedule("windows", window=1, period_steps=10)
            >>> for i in range(40):  # light steps of 2 ms; detailed ones of 8 ms
            ...     schedule.observe(i, 8e6 if i in (0, 10) else 2e6, i in (0, 10))
            >>> schedule._over_budget()  # after the first window: 6 ms extra in 84 ms of steps
            True
        """
        if self._median() is None or self.budget >= 1:
            return False
        total, cost = self._spent
        return cost + self._window_cost() > self.budget * total

    def _spend(self, wall: float, detailed: bool) -> None:
        """Add a step (after the first window) to the budget's account: a window's steps wait
        for the light steps after it, and are settled once PHASE_PROBE came (or a new window)."""
        self._spent[0] += wall
        if detailed:
            if not self._window_walls or self._after:  # a window opens: settle the last,
                self._settle()  # note its phase's light steps before it
                recent = list(self._light)[-PHASE_PROBE:]
                self._around = [statistics.median(recent) if recent else None, None]
            self._window_walls.append(wall)
            return
        if self._window_walls:
            self._after.append(wall)
            self._around[1] = statistics.median(self._after)
            if len(self._after) >= PHASE_PROBE:
                self._settle()

    def _settle(self) -> None:
        self._spent[1] += self._window_cost()
        self._window_walls, self._after, self._around = [], [], [None, None]

    def _window_cost(self) -> float:
        """The last window's detailed steps' median time over the light steps of its phase (see
        the module docstring), times its steps; the median light step while none is near it.

        Example:
            >>> schedule = DetailSchedule("windows", window=1, period_steps=10)
            >>> for i in range(20):  # 7 s steps, then 0.3 s ones: the window (10) is in the first
            ...     schedule.observe(i, 0.3e9 if i > 14 else 7.2e9 if i != 10 else 7.0e9, i in (0, 10))
            >>> schedule._spent[1]  # (weighed against 7.2 s: detail cost nothing)
            0.0
        """
        walls = self._window_walls
        if not walls:
            return 0.0
        refs = [r for r in self._around if r is not None] or [self._median() or 0.0]
        own = statistics.median(walls)
        ref = min(refs, key=lambda r: abs(r - own))
        # (its median step's excess, per step: a step that waited for a core, 16 s among
        # teacher steps of 2.7 s, is no cost of detail)
        return len(walls) * max(0.0, own - ref)

    def _median(self) -> float | None:
        """The median light step, sorted anew every MEDIAN_EVERY light steps (a light step's
        bookkeeping is microseconds)."""
        seen = len(self._light)
        if seen < LONG_AFTER:
            return None
        if self._median_at is None or self._seen - self._median_at >= MEDIAN_EVERY:
            self._median_at, self._median_cached = self._seen, statistics.median(self._light)
        return self._median_cached

    @property
    def audits_every_step(self) -> bool:
        """Whether the sync audit runs in light steps too: with ``detail="always"`` (its
        control steps are light for the module tree only; finding every sync is the point of
        ``torchdoctor syncs``, which uses it).

        Example:
            >>> DetailSchedule("always").audits_every_step, DetailSchedule().audits_every_step
            (True, False)
        """
        return self.mode == "always"

    def compares_inputs(self, index: int, detailed: bool) -> bool:
        """Whether profiled step ``index``, detailed or not, compares module inputs: the first
        detailed step and every FINGERPRINT_EVERY-th after (a window of 5 has one or two; not
        in warm-up, whose steps are not kept). A step's loop-invariant recomputation repeats
        in the next, and comparing costs every module call a few microseconds. (Inference
        loops, where the repeat is across steps, compare in every step: the profiler's call.)

        Example:
            >>> schedule = DetailSchedule("always")
            >>> [schedule.compares_inputs(i, True) for i in range(-1, 9)]
            [False, True, False, False, False, True, False, False, False, True]
        """
        if not detailed or index < 0:
            return False
        self._detailed_count += 1
        return (self._detailed_count - 1) % FINGERPRINT_EVERY == 0

    def times_lines(self, index: int) -> bool:
        """Whether detailed step ``index`` (negative during warm-up: always) times hot lines:
        see LINES_EVERY. Ask once per detailed step, after :meth:`detailed`.

        Example:
            >>> schedule = DetailSchedule("windows", window=5, period_steps=10, period_s=1e9)
            >>> [i for i in range(5) if schedule.detailed(i, 0.0) and schedule.times_lines(i)]
            [0, 2, 4]
            >>> always = DetailSchedule("always")
            >>> [always.times_lines(i) for i in range(-1, 4)]
            [True, True, False, True, False]
        """
        if index < 0:
            return True
        if self.mode == "always":
            return index % LINES_EVERY == 0
        if index == self._aimed_at or self._start is None:
            return True
        return (index - self._start) % LINES_EVERY == 0

    def _control(self, index: int) -> bool:
        """A light control step of ``detail="always"`` (see :meth:`detailed`)."""
        if index < CONTROL_FROM:
            return False
        block, position = divmod(index, CONTROL_EVERY)
        if self._draw[0] != block:  # once per block
            self._draw = (block, random.Random(block).randrange(CONTROL_EVERY))
        return position == self._draw[1]

    def restart(self) -> None:
        """The steps kept so far were dropped: the next step opens a window again."""
        self._start = self._next = self._aim = None
        self._light.clear()  # (steps cut at another boundary: not the same steps)
        self._median_at = None
        self._long = []
        self._detailed_walls.clear()
        self._spent = [0.0, 0.0]
        self._window_walls, self._after, self._around = [], [], [None, None]
        self._after_window.clear()
        self._recent.clear()

    def config(self) -> dict[str, Any]:
        """The schedule as Session config (``config.detail``), kept up to date as it runs."""
        self._config.update(mode=self.mode, window=self.window, period_steps=self.period_steps,
                            period_s=self.period_s, aimed_steps=self.aimed,
                            phase_steps=self.phases,
                            budget_pct=100 * self.budget, postponed_steps=self.postponed)  # fmt: skip
        return self._config


def index_ranges(indices: list[int]) -> list[list[int]]:
    """Consecutive runs of sorted indices as ``[first, last]`` pairs.

    Example:
        >>> index_ranges([0, 1, 2, 7, 9, 10])
        [[0, 2], [7, 7], [9, 10]]
    """
    out: list[list[int]] = []
    for i in indices:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out
