"""Time the ``torch.distributed`` collectives a script calls, per call site and kind.

While a :class:`CollectiveTimer` is installed, the Python API (``all_reduce``, ``all_gather``,
``all_gather_into_tensor``, ``reduce_scatter(_tensor)``, ``broadcast``, ``barrier``, the
``*_object`` collectives, ``send``/``recv``/``isend``/``irecv``...) is wrapped in both
``torch.distributed`` and ``torch.distributed.distributed_c10d`` (a collective calling another
counts once), and DDP's gradient buckets are timed by a comm hook (``collectives_ddp``). Each
call keeps: kind, the user's source line, the group, payload bytes, the step and phase it ran
in (and the module whose forward runs), its wall-clock arrival (compared across ranks after the merge: who waits for whom), its
duration, and how long the caller was blocked (exposed time):

- a blocking call blocks for its whole duration;
- ``async_op=True``: the duration ends when the work's future completes; the exposed part is
  the time spent in ``Work.wait()``;
- DDP buckets: all-reduces overlap the rest of backward; the exposed part is the last
  bucket's tail (from its launch to the last completion).

On CPU times are ``perf_counter_ns``; tensors on CUDA are timed with CUDA events resolved once
when the timer stops. Everything installed is removed by :meth:`CollectiveTimer.stop` (call it
on every exit path); a DDP comm hook cannot be unregistered, so after ``stop`` it only forwards.

Example:
    >>> timer = CollectiveTimer().start()
    >>> timer.stop()
    >>> timer.records
    []
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from torchdoctor.collect.collective_call import Call, payload_bytes
from torchdoctor.collect.collective_call import stamp as _stamp

__all__ = ["CollectiveTimer", "Call", "COLLECTIVES", "POINT_TO_POINT", "payload_bytes"]

#: the wrapped API: name -> kind shown in reports
COLLECTIVES = {
    "all_reduce": "all_reduce", "all_reduce_coalesced": "all_reduce",
    "all_gather": "all_gather", "all_gather_into_tensor": "all_gather",
    "all_gather_single": "all_gather", "_all_gather_base": "all_gather",
    "reduce_scatter": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter",
    "reduce_scatter_single": "reduce_scatter", "_reduce_scatter_base": "reduce_scatter",
    "broadcast": "broadcast", "reduce": "reduce", "gather": "gather", "scatter": "scatter",
    "all_to_all": "all_to_all", "all_to_all_single": "all_to_all",
    "barrier": "barrier", "monitored_barrier": "barrier",
    "all_gather_object": "all_gather_object", "broadcast_object_list": "broadcast_object",
    "gather_object": "gather_object", "scatter_object_list": "scatter_object",
    "send": "send", "recv": "recv", "isend": "send", "irecv": "recv",
}  # fmt: skip
#: kinds that pair two ranks: no arrival skew across the whole group
POINT_TO_POINT = frozenset({"send", "recv"})
_ALWAYS_ASYNC = frozenset({"isend", "irecv"})
#: raw calls kept per run (beyond this, calls are counted but not kept; said in the notes)
MAX_CALLS = 200_000


def _group_name(group: Any) -> str:
    if group is None:
        return "default"
    name = getattr(group, "group_name", None)
    return str(name) if name else f"group{id(group)}"


def _user_site() -> tuple[str, int, str]:
    from torchdoctor.collect.syncs_frames import user_frame

    try:
        return user_frame()
    except Exception:  # a stack without any user frame (called from torch's threads)
        return ("<unknown>", 0, "<unknown>")


class CollectiveTimer:
    """Installs the timing wrappers (``start``) and removes them (``stop``); ``records`` holds
    the :class:`Call` s, ``store``/``rank``/``world_size`` the default process group's store
    once the script initialized one (used to merge the ranks' sessions at the end).

    Example:
        >>> import torch.distributed as dist
        >>> timer = CollectiveTimer().start()
        >>> dist.all_reduce is dist.distributed_c10d.all_reduce  # both wrapped
        True
        >>> timer.stop(); getattr(dist.all_reduce, "__torchdoctor_original__", None) is None
        True
    """

    def __init__(self) -> None:
        self.records: list[Call] = []
        self.dropped = 0
        self.notes: list[str] = []
        self.store: Any = None
        self.rank: int | None = None
        self.world_size: int | None = None
        self.backend: str | None = None
        self.ddp: list[dict[str, Any]] = []  # per DDP model: bucket settings and hook state
        self.ddp_models: list[tuple[Any, dict[str, Any]]] = []  # (weakref to model, settings)
        self.active = False
        self.cuda_timed = False
        self._undo: list[Callable[[], None]] = []
        self._local = threading.local()
        self._seq: dict[str, int] = {}
        self._pending: dict[int, tuple[Any, Call]] = {}  # id(work) -> (work, call)
        self._lock = threading.Lock()
        self._wait_patched = False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> CollectiveTimer:
        """Wrap the API (a no-op without ``torch.distributed``); returns self."""
        if not torch.distributed.is_available():
            return self
        try:
            self._install()
        except BaseException:
            self._remove()
            raise
        self.active = True
        return self

    def stop(self) -> None:
        """Remove every wrapper, capture the store if the group still lives, resolve events."""
        self.active = False
        self._capture_group()
        self._remove()
        self._resolve_cuda()
        from torchdoctor.collect.collectives_ddp import ddp_settings

        for ref, settings in self.ddp_models:  # buckets are rebuilt after the first step
            model = ref()
            if model is not None:
                settings.update(ddp_settings(model))

    def _remove(self) -> None:
        while self._undo:
            self._undo.pop()()
        self._wait_patched = False

    def _install(self) -> None:
        import torch.distributed as dist
        from torch.distributed import distributed_c10d as c10d

        from torchdoctor.collect.collectives_ddp import install_ddp_hooks

        for name in COLLECTIVES:
            original = getattr(c10d, name, None) or getattr(dist, name, None)
            if original is None:
                continue
            wrapped = self._wrap(name, original)
            for module in (dist, c10d):
                if getattr(module, name, None) is original:
                    setattr(module, name, wrapped)
                    self._undo.append(functools.partial(setattr, module, name, original))
        init = getattr(dist, "init_process_group", None)
        if init is not None:
            wrapped_init = self._wrap_init(init)
            for module in (dist, c10d):
                if getattr(module, "init_process_group", None) is init:
                    module.init_process_group = wrapped_init
                    self._undo.append(functools.partial(setattr, module, "init_process_group",
                                                        init))  # fmt: skip
        self._undo.append(install_ddp_hooks(self))
        self._capture_group()

    # -- the process group ------------------------------------------------------------------
    def _capture_group(self) -> None:
        if self.store is not None:
            return
        try:
            from torch.distributed import distributed_c10d as c10d

            if not c10d.is_initialized():
                return
            self.store = c10d._get_default_store()
            self.rank, self.world_size = c10d.get_rank(), c10d.get_world_size()
            self.backend = str(c10d.get_backend())
        except Exception:  # private API moved or group half-built: the file merge remains
            self.store = None

    def _wrap_init(self, init: Callable) -> Callable:
        @functools.wraps(init)
        def init_process_group(*args: Any, **kwargs: Any) -> Any:
            result = init(*args, **kwargs)
            self._capture_group()
            return result

        return init_process_group

    # -- timing -----------------------------------------------------------------------------
    def next_seq(self, group: str) -> int:
        """Order of this call among the group's collectives (the same on every rank).

        Example:
            >>> timer = CollectiveTimer()
            >>> timer.next_seq("default"), timer.next_seq("default"), timer.next_seq("tp")
            (0, 1, 0)
        """
        with self._lock:
            seq = self._seq.get(group, 0)
            self._seq[group] = seq + 1
        return seq

    def keep(self, call: Call) -> bool:
        """Add a call unless the cap is reached (then it is only counted).

        Example:
            >>> CollectiveTimer().keep(Call("barrier", ("t.py", 1, "f"), "default", False, None, 0))
            True
        """
        if self.store is None:  # a group made by an init_process_group bound before ours
            self._capture_group()  # was installed (`from torch.distributed import ...` in a
            # spawned child, imported before its profile starts): known at its first collective
        if len(self.records) >= MAX_CALLS:
            self.dropped += 1
            return False
        self.records.append(call)
        return True

    @property
    def inside(self) -> bool:
        """True inside a timed call on this thread: nested calls are part of the outer one.

        Example:
            >>> timer = CollectiveTimer()
            >>> timer.enter(); timer.inside
            True
            >>> timer.leave(); timer.inside
            False
        """
        return getattr(self._local, "depth", 0) > 0

    def enter(self) -> None:
        """Mark this thread as inside a timed call (see :attr:`inside`)."""
        self._local.depth = getattr(self._local, "depth", 0) + 1

    def leave(self) -> None:
        """Undo one :meth:`enter`."""
        self._local.depth -= 1

    def _wrap(self, name: str, original: Callable) -> Callable:
        names = list(inspect.signature(original).parameters)
        kind = COLLECTIVES[name]
        always_async = name in _ALWAYS_ASYNC

        @functools.wraps(original)
        def collective(*args: Any, **kwargs: Any) -> Any:
            if not self.active or self.inside:
                return original(*args, **kwargs)
            bound = dict(zip(names, args))  # faster than Signature.bind; torch checks the call
            bound.update(kwargs)
            group = _group_name(bound.get("group"))
            is_async = always_async or bool(bound.get("async_op", False))
            call = Call(kind, _user_site(), group, is_async, payload_bytes(bound.values()),
                        self.next_seq(group))  # fmt: skip
            cuda = _on_cuda(bound.values())
            call.start = _stamp(cuda)
            self.enter()
            try:
                result = original(*args, **kwargs)
            finally:
                self.leave()
            if is_async and result is not None and hasattr(result, "wait"):
                self._track_async(result, call, cuda)
            else:
                call.end = _stamp(cuda)
                if not cuda:
                    call.exposed_ns = call.end - call.start
            self.keep(call)
            return result

        collective.__torchdoctor_original__ = original  # type: ignore[attr-defined]
        return collective

    def _patch_wait(self) -> None:
        """``Work.wait`` timed from the first async call on (a Python wrapper costs every
        blocking collective, which waits inside torch, ~20 us: not paid without async calls)."""
        from torch.distributed import distributed_c10d as c10d

        work = getattr(c10d, "Work", None)
        if self._wait_patched or work is None or not hasattr(work, "wait"):
            return
        self._wait_patched = True
        wait = work.wait
        work.wait = self._wrap_wait(wait)
        self._undo.append(functools.partial(setattr, work, "wait", wait))

    def _track_async(self, work: Any, call: Call, cuda: bool) -> None:
        if not self._wait_patched:
            self._patch_wait()
        with self._lock:
            if len(self._pending) < 10_000:
                self._pending[id(work)] = (work, call)
        if cuda:
            return  # the end event is recorded after wait() (the stream then waits for it)
        try:
            future = work.get_future()
        except Exception:  # a backend without futures: wait() ends it
            return

        def done(_: Any) -> None:
            if call.end is None:
                call.end = time.perf_counter_ns()

        future.add_done_callback(done)

    def _wrap_wait(self, wait: Callable) -> Callable:
        @functools.wraps(wait)
        def timed_wait(work: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                entry = self._pending.pop(id(work), None)
            if entry is None or entry[0] is not work:
                return wait(work, *args, **kwargs)
            call = entry[1]
            cuda = not isinstance(call.start, int)
            began = time.perf_counter_ns()
            try:
                return wait(work, *args, **kwargs)
            finally:
                finished = time.perf_counter_ns()
                if cuda:
                    call.end = _stamp(True)
                else:
                    call.exposed_ns += finished - began
                    if call.end is None or call.end > finished:
                        call.end = finished

        return timed_wait

    def _resolve_cuda(self) -> None:
        """CUDA-event calls: durations from the events (one synchronize, here at the end)."""
        timed = [c for c in self.records if c.start is not None and not isinstance(c.start, int)]
        if not timed:
            return
        self.cuda_timed = True
        torch.cuda.synchronize()
        for call in timed:
            if call.end is None or isinstance(call.end, int):
                call.start, call.end = 0, None
                continue
            duration = int(call.start.elapsed_time(call.end) * 1e6)
            call.start, call.end = 0, duration
            if not call.is_async:
                call.exposed_ns = duration


def _on_cuda(values: Any) -> bool:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.is_cuda
        if isinstance(value, list | tuple) and value and isinstance(value[0], torch.Tensor):
            return value[0].is_cuda
    return False
