"""Which call ends (or starts) a step when a loop repeats several optimizers or top-level modules.

A GAN steps a discriminator optimizer, then a generator optimizer; a guided sampler calls a
condition encoder, then a denoiser twice. Cutting a step at every optimizer step or every
outermost call would give half-iterations. These trackers pick the one call per round that
marks the iteration boundary; ``Profiler`` asks them and cuts.

Example:
    >>> rounds = OptimizerRound()
    >>> d, g = object(), object()
    >>> [rounds.observe(o)[0] for o in (d, g, d, g, d)]
    ['cut', 'cut', 'decided', 'cut', 'skip']
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["IN_TURN", "ModuleRound", "OptimizerRound"]

#: the words of the note a round decided on optimizers in turn says (a revision drops it)
IN_TURN = "optimizers step in turn"


class OptimizerRound:
    """Steps end at optimizer steps; when several optimizers step in turn, only at the one that
    closes the round: the optimizer that stepped just before the first one stepped again.

    Example:
        >>> round_, a, b = OptimizerRound(), "generator optimizer", "critic optimizer"
        >>> round_.observe(a), round_.observe(b), round_.observe(a)[0], round_.observe(b)
        (('cut', None), ('cut', None), 'decided', ('cut', None))

        A critic stepping each iteration, its actor every 2nd (TD3): a round is 2 iterations:
            >>> round_, critic, actor = OptimizerRound(), object(), object()
            >>> [round_.observe(o)[0] for o in (critic, critic, actor, critic, critic)]
            ['cut', 'cut', 'cut', 'decided', 'skip']
            >>> print(round_.observe(actor)[1])  # doctest: +ELLIPSIS
            the object steps 2 times in each round, ...: a step here is 2 of its iterations, ...
    """

    def __init__(self) -> None:
        #: steps per optimizer, while it lives: an optimizer made anew each epoch may take the
        #: id of one freed (counted by id, the new one read as stepping "again": 60 steps in 6
        #: epochs were one step)
        self.counts: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._by_id: dict[int, int] = {}  # (an object without weak references: by id)
        self.last: tuple[int, Any] | None = None  # (id, optimizer) of the latest step
        self.closer: tuple[int, Any] | None = None  # the object keeps its id unique
        self.opener: tuple[int, Any] | None = None  # the one whose return decided the round
        self.closer_stepped = True  # the closer stepped since the opener began a round
        #: steps per optimizer (by id) in the first whole round, until it closes (None after)
        self._first_round: dict[int, tuple[int, Any]] | None = None

    def observe(self, optimizer: Any) -> tuple[str, str | None]:
        """``("cut" | "skip" | "decided" | "restart", note)`` for a finished
        ``optimizer.step()``.

        ``decided``: the round is known from now on; the step open now is a whole iteration
        and the steps recorded before it were partial. ``restart``: the round was misread (the
        closer never stepped again: made anew each iteration); the steps recorded so far and
        the one open now are partial, and a whole iteration begins after this step.

        Example (MAML by copy: a new SGD per task, one Adam step per iteration):
            >>> round_, adam = OptimizerRound(), "Adam"
            >>> tasks = [[object(), object()] for _ in range(3)]
            >>> [round_.observe(o)[0] for o in [*tasks[0], adam, *tasks[1], adam]]
            ['cut', 'cut', 'cut', 'cut', 'cut', 'decided']
            >>> [round_.observe(o)[0] for o in [*tasks[2], adam, object(), adam]]
            ['skip', 'skip', 'restart', 'skip', 'cut']
        """
        key = id(optimizer)
        try:
            count = self.counts[optimizer] = self.counts.get(optimizer, 0) + 1
        except TypeError:
            count = self._by_id[key] = self._by_id.get(key, 0) + 1
        previous, self.last = self.last, (key, optimizer)
        if self.closer is not None:
            if self._first_round is not None:
                self._first_round[key] = (self._first_round.get(key, (0, None))[0] + 1, optimizer)
            if key == self.closer[0]:
                self.closer_stepped = True
                return "cut", self._spans_iterations()
            if self.opener is not None and key == self.opener[0] and previous is not None \
                    and previous[0] != key:  # (the opener begins a round)
                if not self.closer_stepped:  # the closer sat out a whole round: made anew
                    made_anew, self.closer = self.closer, self.opener  # (each iteration)
                    self._first_round = {}  # (a whole round begins after this step)
                    return "restart", (
                        f"the {type(made_anew[1]).__name__} that stepped before the "
                        f"{type(optimizer).__name__} never stepped again (an optimizer made "
                        f"anew each iteration, as per-task copies are): a step ends at each "
                        f"step of the {type(optimizer).__name__} (one training iteration); "
                        "earlier steps dropped"
                    )
                self.closer_stepped = False
            return "skip", None
        if previous is None or previous[0] == key or len(self.counts) + len(self._by_id) < 2:
            return "cut", None
        if count < 2:
            return "cut", None
        self.closer, self.opener, self.closer_stepped = previous, self.last, False
        self._first_round = {key: (1, optimizer)}  # (the step open now begins a whole round)
        return "decided", (
            f"{len(self.counts) + len(self._by_id)} {IN_TURN}: a step ends at each step of the "
            f"{type(previous[1]).__name__} that closes the round (one training iteration); "
            "earlier partial steps dropped"
        )

    def _spans_iterations(self) -> str | None:
        """At the close of the first whole round: a note when an optimizer stepped more than
        once in it (TD3's critic steps each iteration, its actor every 2nd: a step here is 2
        iterations, not one, and every time per step is the round's)."""
        counts, self._first_round = self._first_round, None
        if not counts:
            return None
        often = max(counts.values(), key=lambda entry: entry[0])
        if often[0] < 2:
            return None
        closer = _described(self.closer[1]) if self.closer is not None else "optimizer"
        return (
            f"the {_described(often[1])} steps {often[0]} times in each round, the {closer} "
            f"that closes it once (a delayed or less frequent update): a step here is "
            f"{often[0]} of its iterations, not one; every time per step is the round's"
        )


def _described(optimizer: Any) -> str:
    """``Adam over 133,634 parameters`` (its class alone when it has no parameter groups).

    Example:
        >>> import torch
        >>> _described(torch.optim.SGD([torch.zeros(3, 2)], lr=0.1)), _described(object())
        ('SGD over 6 parameters', 'object')
    """
    name = type(optimizer).__name__
    try:
        count = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    except (AttributeError, KeyError, TypeError):
        return name
    return f"{name} over {count:,} parameters"

class ModuleRound:
    """While deciding whether steps are outermost module calls (an inference loop): a step
    starts at each call of the module the loop opens with, once it comes back after other
    modules (and has been called ``needed`` times); if it does not come back soon, the first
    module called ``2 x needed`` times decides; after ``4 x needed`` calls in all, every call
    starts a step. A loop that opens with ``needed`` calls of one module in a row is taken
    for a one-module loop (every call a step) until another module runs and the first comes
    back: then it is a round that opens with a run of calls (a guided sampler encoding the
    prompt and the empty prompt), and a step starts at the first call of each run.

    Example:
        >>> rounds, text, den = ModuleRound(), object(), object()
        >>> [rounds.observe(m, 2)[0] for m in (text, text)]  # one module so far: every call
        [False, True]
        >>> [rounds.starts_step(m)[0] for m in (den, den, text, text, den, den, text)]
        [True, True, True, False, False, False, True]
    """

    def __init__(self, name_of: Any = None) -> None:
        #: how notes name a module (the profiler's module path; default: its class name)
        self.name_of = name_of or (lambda module: type(module).__name__)
        self.counts: dict[int, int] = {}
        self.total = 0
        self.first: Any = None
        self.last: Any = None  # the latest outermost module called
        self.opening_run = 0  # calls of the first module before any other module
        self.runs = False  # a step starts at the first call of each run of ``chosen``
        self.chosen: Any = None  # the module whose calls start steps (None: every call)
        self.tentative = False  # "every call" decided on one module: revised by a round
        self.others = False  # another module ran since the tentative decision
        # a chosen module called more than once per iteration (a seq2seq model's embedding,
        # before its encoder and before its decoder): the other modules between its calls
        # alternate; a step starts at every ``period``-th call of it, from the first
        self.period = 1
        self.chosen_calls = 0  # calls of ``chosen`` so far (the first one opened the loop)
        self._between: list[int] = []  # the other modules since its last call (their ids)
        self._segments: list[tuple[int, ...]] = []  # ... of its last calls, the latest last

    def observe(self, module: Any, needed: int) -> tuple[bool, str | None]:
        """``(decided, note)`` for an outermost call made while deciding."""
        self.total += 1
        key = id(module)
        self.counts[key] = count = self.counts.get(key, 0) + 1
        if self.first is None:
            self.first = module
        previous, self.last = self.last, module
        if len(self.counts) == 1:
            self.opening_run += 1
            if count >= needed:  # one module so far, called again: every call, for now
                self.tentative = True
                return True, None
        opener = module is self.first and previous is not module and count >= needed
        if not (opener or count >= 2 * needed or self.total >= 4 * needed):
            return False, None
        if opener or count >= 2 * needed:
            self.chosen = module
            self.chosen_calls = count
            return True, self._note(module, opener)
        return True, None

    def starts_step(self, module: Any) -> tuple[bool, str | None]:
        """``(starts, note)`` for an outermost call once decided; a note means the round was
        revised now: the steps recorded so far were partial iterations."""
        previous, self.last = self.last, module
        if self.tentative:
            if module is not self.first:
                self.others = True
            elif self.others:  # the first module is back after others: a round
                self.tentative = False
                self.chosen, self.chosen_calls = module, 1  # (this call opens an iteration)
                self.runs = self.opening_run > 1
                return True, self._note(module, True) + "; earlier steps dropped"
        if self.chosen is None:
            return True, None
        # (the loop's shape shows in its first calls: then no more bookkeeping per call)
        looking = self.period == 1 and self.chosen_calls < _LOOK_CALLS
        if module is not self.chosen:
            if looking and len(self._between) < _MAX_BETWEEN:
                self._between.append(id(module))
            return False, None
        if self.runs:
            return previous is not module, None
        index, self.chosen_calls = self.chosen_calls, self.chosen_calls + 1
        if looking:
            self._segments = [*self._segments[-(2 * _MAX_PERIOD - 1):], tuple(self._between)]
            self._between = []
            period = _alternation(self._segments)
            if period > 1 and index % period == 0:  # (at a call that opens an iteration)
                self.period = period
                return True, (
                    f"{self.name_of(module)} is called {period} times per iteration, with "
                    "other modules between: a step starts at every "
                    f"{_ordinal(period)} call of it, from the first; earlier steps dropped"
                )
        return index % self.period == 0, None

    def _note(self, module: Any, opener: bool) -> str:
        where = " (the first one the loop calls)" if opener else ""
        run = f", the first of its {self.opening_run} calls in a row" if self.runs else ""
        return (
            f"several outermost modules: a step starts at each call of "
            f"{self.name_of(module)}{where}{run}"
        )


#: the longest alternation of segments looked for (calls of the chosen module per iteration)
_MAX_PERIOD = 4
#: other modules remembered between two calls of the chosen one
_MAX_BETWEEN = 64
#: calls of the chosen module within which an alternation is looked for
_LOOK_CALLS = 32


def _alternation(segments: list[tuple[int, ...]]) -> int:
    """The period (2 to _MAX_PERIOD) at which the last segments repeat without all being alike
    (``A, B, A, B``: a module called twice per iteration), else 1.

    Example:
        >>> _alternation([(1,), (2, 3), (1,), (2, 3)]), _alternation([(1,), (1,), (1,), (1,)])
        (2, 1)
    """
    for period in range(2, _MAX_PERIOD + 1):
        last = segments[-2 * period :]
        if len(last) == 2 * period and last[:period] == last[period:] and len(set(last)) > 1:
            return period
    return 1


def _ordinal(n: int) -> str:
    """``2nd``, ``3rd``, ``4th``.

    Example:
        >>> _ordinal(2), _ordinal(3), _ordinal(4)
        ('2nd', '3rd', '4th')
    """
    return {2: "2nd", 3: "3rd"}.get(n, f"{n}th")
