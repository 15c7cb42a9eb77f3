"""Where the hot-lines collector's function mode sits on the mode stack, step by step.

The mode is *parked* (taken off the stack, its depth remembered) in the optimizer and data
phases, whose torch calls are many (a per-parameter optimizer, a collate function) and charged
to no line, yet each would pay the mode's dispatch, inside library modules (their calls are the
module's time in the tree) and in ``Optimizer.zero_grad`` (``collect/lines_install.py``). It is put back at the same depth, under any
mode pushed since (the sync audit's), so the order of modes never changes.

Example:
    >>> import torch
    >>> from torch.overrides import TorchFunctionMode
    >>> parking = ModeParking()
    >>> parking._mode, parking.active = TorchFunctionMode(), True
    >>> torch._C._push_on_torch_function_stack(parking._mode)
    >>> parking.phase_changed("optimizer"); parking.parked()
    True
    >>> parking.phase_changed("forward"); parking.parked()
    False
    >>> _ = torch._C._pop_torch_function_stack()
"""

from __future__ import annotations

from typing import Any

import torch

from torchdoctor.collect.lines_install import (
    COUNTED_PHASES,
    PARKED_PHASES,
    PENDING,
    insert_function_mode,
    remove_function_mode,
    run_pending,
)

#: strays kept listed while not back on the stack (one per window at most; a bound for safety)
MAX_STRAYS = 8


class _Inert:
    """What a retired mode reports to: counts nothing, times nothing (its handler passes each
    call through as for a stopped collector)."""

    active = False
    seen = seen_python = 0
    last: Any = None


INERT = _Inert()

_stack_len = torch._C._len_torch_function_stack
_stack_at = torch._C._get_function_stack_at
_pop = torch._C._pop_torch_function_stack
_push = torch._C._push_on_torch_function_stack


class ModeParking:
    """The parking state of a collector's mode (``_mode``, set by the collector)."""

    _mode: Any = None
    _parked: int | None = None  # the stack depth the parked mode is put back at
    #: modes stopped inside their own handler (a step cut at ``Tensor.backward``): torch pops
    #: a mode for the time its handler runs and pushes it back after, so they are taken off at
    #: the next phase change (:meth:`settle`); left there, one more stayed each window
    _strays: tuple = ()
    _park_pending = False  # park() ran inside the mode's handler: park at the next change
    active = False
    shadow = False  # paused in a light step, parked and put back as if active (see pause)
    in_library = False  # the innermost call open is a library module's (see owner_changed)
    phase_counted = True  # the phase's torch calls are charged to lines
    last: Any  # the collector's: its last call, and the frames it tracks (both reset here)
    executions: dict[int, tuple]

    def pause(self, shadow: bool = False) -> None:
        """Off for a whole step (phase changes leave it parked), its place on the stack kept
        under modes that stay (a sync audit that runs every step); ``start`` puts it back.
        ``shadow`` (compiled code runs: Dynamo guards on the mode stack, so a stack that differs
        from a detailed step's recompiles the user's compiled functions): the mode is parked and
        put back at the same phase changes and library calls as in a detailed step, passing
        every call through.

        Example:
            >>> import torch
            >>> from torch.overrides import TorchFunctionMode
            >>> parking = ModeParking()
            >>> parking._mode, parking.active = TorchFunctionMode(), True
            >>> torch._C._push_on_torch_function_stack(parking._mode)
            >>> parking.pause(shadow=True); parking.parked(), parking.active
            (False, False)
            >>> parking.phase_changed("optimizer"); parking.parked()
            True
            >>> parking.phase_changed("forward"); parking.pause(); parking.parked()
            True
        """
        self.active = False
        self.shadow = shadow
        if shadow and self.phase_counted and not self.in_library:
            self.unpark()
        else:
            self.park()

    def phase_changed(self, phase: str) -> None:
        """Park the mode in the optimizer and data phases, put it back for the others (set as
        the step's ``PhaseMachine.on_change``). Their torch calls are not charged to lines,
        yet each one would pay the mode's dispatch (a few hundred per step for a
        per-parameter optimizer, the largest part of the collector's cost on small steps)."""
        self.phase_counted = phase not in PARKED_PHASES
        if PENDING:
            run_pending()
        if not (self.active or self.shadow):  # stopped or paused (light steps)
            return
        if phase in PARKED_PHASES:
            self.park()
        elif phase in COUNTED_PHASES:
            if not self.in_library:
                self.unpark()
        else:  # backward: a line's execution ends there; release the frames held to compare
            self.executions = {}

    def owner_changed(self, library: bool) -> None:
        """The innermost module or region call changed (``library``: it is a library module's,
        whose torch calls are the module's time, never a line's): park the mode for the time
        it runs (an ``nn.Linear``'s ``F.linear``, a Hugging Face block's hundreds of calls),
        put it back when user code owns the calls again."""
        if library == self.in_library:
            return
        self.in_library = library
        if not (self.active or self.shadow):
            return
        if library:
            self.park()
        elif self.phase_counted:
            self.unpark()

    def parked(self) -> bool:
        return self._parked is not None

    def placed(self) -> bool:
        """Whether the mode has a place on the stack (on it, or parked): started, not
        stopped."""
        return self._mode is not None

    def park(self) -> None:
        """Take the mode off the stack (a no-op when parked already; when it is popped while
        its own handler runs, as for ``Tensor.backward``, at the next phase change)."""
        if self._mode is not None and self._parked is None:
            depth = _stack_len() - 1
            if depth >= 0 and _stack_at(depth) is self._mode:  # on top: the common case
                _pop()
                self._parked = depth
            else:
                self._parked = remove_function_mode(self._mode)
                if self._parked is None:
                    self._park_pending = True
                    self._pend()

    def retire(self, mode: Any) -> None:
        """Take a stopped ``mode`` off the stack for good; inside its own handler, where it is
        not on the stack, it is made inert and taken off at the next phase change."""
        if remove_function_mode(mode) is None:
            mode.collector = INERT
            self._strays = (*self._strays, mode)[-MAX_STRAYS:]
            self._pend()

    def _pend(self) -> None:
        if self.settle not in PENDING:
            PENDING.append(self.settle)

    def settle(self) -> bool:
        """Finish what the mode's own handler kept from being done (see ``_strays``): strays
        back on the stack are taken off, a pending park is made; True when nothing is left.

        Example:
            >>> from torch.overrides import TorchFunctionMode
            >>> parking, stray = ModeParking(), TorchFunctionMode()
            >>> parking._strays = (stray,)
            >>> torch._C._push_on_torch_function_stack(stray)  # torch put it back
            >>> parking.settle(), parking._strays, torch._C._len_torch_function_stack()
            (True, (), 0)
        """
        if self._strays:  # (one not back yet stays listed until it is)
            self._strays = tuple(m for m in self._strays if remove_function_mode(m) is None)
        if self._park_pending and self._parked is None and self._mode is not None:
            self._parked = remove_function_mode(self._mode)
            self._park_pending = self._parked is None
        else:
            self._park_pending = False
        return not self._strays and not self._park_pending

    def unpark(self) -> None:
        """Put a parked mode back where it was on the stack."""
        self._park_pending = False
        if self._mode is not None and self._parked is not None:
            depth, self._parked = self._parked, None
            if _stack_len() == depth:  # nothing pushed since: back on top
                _push(self._mode)
            else:
                insert_function_mode(self._mode, depth)
            self.last = None
