"""The cyclic garbage collector while a profiler runs: the objects alive when it starts, and again
when its first backward pass begins (or its first step ends), are set aside (``gc.freeze()``),
so collections walk only what the run makes from then on.

Why (measured, BENCHMARKS.md "Garbage collection under the profiler"): a detailed step keeps a
few small objects per module call until the step closes (the graph hooks' entries, torch's hook
dictionaries, the ``grad_fn`` objects they are registered on). On steps of thousands of module
calls (an ``LSTMCell`` run per time step) they add up to tens of thousands of survivors, which
set off full collections, each walking every object of the process (about 280,000 once torch and
matplotlib are imported: 130 to 220 ms each), one or two per detailed step where the plain run
had none. Frozen, the objects of the imports, the model and its data are not walked again. The
second freeze is for ``torchdoctor run``, which starts the profiler before the script imports
its libraries and builds its model: the first backward pass (or, in an inference loop, the first
step's end) is the first moment those surely exist; a collection of the young generations runs
just before it, so the garbage made since the last full collection is not frozen.

What does not change: an object freed by its reference count (nearly every tensor and record) is
freed at once, frozen or not, and everything made after the first step is collected as before.
Limits: an object alive at a freeze that becomes unreachable through a reference cycle while the
profiler runs (or was already, in the oldest generation at the second freeze) is collected after
it stops (``gc.unfreeze()`` returns the frozen objects to the oldest generation). Nothing is
done when the collector is disabled or the program froze objects itself (``gc.get_freeze_count()``
above what it was when torchdoctor was imported: Python 3.12 starts with a few hundred), and a
forked child (a DataLoader worker) keeps its inherited objects frozen: unfreezing them would
write to every shared page, the copying ``gc.freeze()`` exists to avoid.

Example:
    >>> import gc
    >>> frozen = FrozenObjects()
    >>> frozen.start(); frozen.active == gc.isenabled()
    True
    >>> frozen.release(); gc.get_freeze_count()
    0
"""

from __future__ import annotations

import gc
import os

#: what is frozen when torchdoctor is imported: the interpreter's own (Python 3.12 starts with a
#: few hundred objects in the permanent generation; 3.11 and 3.13 with none); more than that at
#: a profiler's start is a program's own freeze, left alone
_FROZEN_AT_IMPORT = gc.get_freeze_count()


class FrozenObjects:
    """``start()`` freezes what is alive, ``again()`` once more (after a young collection),
    ``release()`` unfreezes in this process (never in a forked child); each is a no-op when
    the collector is off or the program froze objects itself.

    Example:
        >>> frozen = FrozenObjects(); frozen.start()
        >>> frozen.again(); frozen.again()  # (the second does nothing)
        >>> frozen.release(); frozen.release(); frozen.active
        False
    """

    def __init__(self) -> None:
        self.active = False
        self._pid = os.getpid()
        self._again = False

    def start(self) -> None:
        if gc.isenabled() and gc.get_freeze_count() <= _FROZEN_AT_IMPORT:
            self.active, self._pid, self._again = True, os.getpid(), True
            gc.freeze()

    def again(self) -> None:
        if self._again and self.active and os.getpid() == self._pid and gc.isenabled():
            self._again = False
            gc.collect(1)  # (the young garbage is not frozen; a full collection would cost
            gc.freeze()  # what this spares: 130-220 ms)

    def release(self) -> None:
        if self.active and os.getpid() == self._pid:
            self.active = False
            gc.unfreeze()
