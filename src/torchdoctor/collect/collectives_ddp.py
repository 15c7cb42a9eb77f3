"""Time DDP's gradient buckets with a comm hook that wraps DDP's default all-reduce.

DDP's reducer all-reduces gradient buckets from C++, out of sight of the Python API. At the
first forward of each ``DistributedDataParallel`` model, while collectives are timed, a comm hook
is registered that calls ``default_hooks.allreduce_hook`` (the same result as DDP without a
hook) and times each bucket from launch to completion. A model that already has a comm hook of
its own keeps it, untimed, and the session says so. If the script registers its hook after our
one (after its first forward), that hook is called by ours: DDP allows one hook per model.

Example:
    >>> from torchdoctor.collect.collectives import CollectiveTimer
    >>> undo = install_ddp_hooks(CollectiveTimer())
    >>> undo()
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable
from typing import Any

from torchdoctor.collect.collective_call import Call
from torchdoctor.collect.collective_call import stamp as _stamp
from torchdoctor.collect.state import STATE

__all__ = ["install_ddp_hooks", "ddp_settings"]


def ddp_settings(model: Any) -> dict[str, Any]:
    """Bucket settings of a DDP model from its logging data (plain data; {} when unavailable).

    Example:
        >>> ddp_settings(object())
        {}
    """
    try:
        data = model._get_ddp_logging_data()
    except Exception:
        return {}
    sizes = str(data.get("bucket_sizes") or "")
    return {
        "bucket_cap_bytes": int(data.get("bucket_cap_bytes") or 0),
        "bucket_sizes_bytes": [int(s) for s in sizes.split(",") if s.strip().isdigit()],
        "gradient_as_bucket_view": bool(data.get("gradient_as_bucket_view")),
        "find_unused_parameters": bool(data.get("find_unused_parameters")),
        "static_graph": bool(data.get("static_graph")),
        "parameters": int(data.get("num_parameter_tensors") or 0),
    }


def _own_hook(model: Any) -> str | None:
    """The name of a comm hook the script registered itself, else None."""
    hooks = getattr(model, "_comm_hooks", None)
    if hooks:
        hook = hooks[0][0]
        return getattr(hook, "__qualname__", repr(hook))
    try:
        name = model._get_ddp_logging_data().get("comm_hook")
    except Exception:
        return None
    return str(name) if name else None


def install_ddp_hooks(timer: Any) -> Callable[[], None]:
    """Patch ``DistributedDataParallel.forward`` and ``register_comm_hook``; returns the undo.

    Example:
        >>> from torch.nn.parallel import DistributedDataParallel as DDP
        >>> from torchdoctor.collect.collectives import CollectiveTimer
        >>> forward = DDP.forward
        >>> undo = install_ddp_hooks(CollectiveTimer())
        >>> DDP.forward is forward
        False
        >>> undo(); DDP.forward is forward
        True
    """
    try:
        from torch.nn.parallel import DistributedDataParallel as DDP
    except ImportError:
        return lambda: None
    seen: weakref.WeakSet = weakref.WeakSet()
    delegates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    forward, register = DDP.forward, DDP.register_comm_hook

    @functools.wraps(forward)
    def timed_forward(model: Any, *args: Any, **kwargs: Any) -> Any:
        if timer.active and model not in seen:
            seen.add(model)
            _attach(timer, model, delegates, register)
        return forward(model, *args, **kwargs)

    @functools.wraps(register)
    def register_comm_hook(model: Any, state: object, hook: Callable) -> None:
        entry = delegates.get(model)
        if entry is None:
            return register(model, state, hook)
        entry["delegate"] = functools.partial(hook, state)
        entry["settings"]["hook"] = getattr(hook, "__qualname__", repr(hook))
        entry["settings"]["note"] = "buckets timed around the script's own comm hook"
        return None

    DDP.forward, DDP.register_comm_hook = timed_forward, register_comm_hook

    def undo() -> None:
        DDP.forward, DDP.register_comm_hook = forward, register

    return undo


def _attach(timer: Any, model: Any, delegates: Any, register: Callable) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    settings = {"model": type(model.module).__name__, **ddp_settings(model)}
    timer.ddp.append(settings)
    timer.ddp_models.append((weakref.ref(model), settings))  # settings re-read at stop
    own = _own_hook(model)
    if own is not None:
        settings.update(timed=False, hook=own,
                        note=f"DDP buckets not timed: the model has its own comm hook ({own}), "
                        "which torchdoctor does not replace")  # fmt: skip
        timer.notes.append(settings["note"])
        return
    process_group = model.process_group
    group = getattr(process_group, "group_name", None) or "default"
    entry = {"delegate": functools.partial(default_hooks.allreduce_hook, process_group),
             "settings": settings}  # fmt: skip

    def timed_bucket_hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP checks
        # the annotations of a comm hook: none at all passes (strings from `annotations` fail)
        if not timer.active:
            return entry["delegate"](bucket)
        buffer = bucket.buffer()
        sizes = settings.setdefault("buckets_bytes", [])
        index = bucket.index()
        if index >= len(sizes):  # buckets as DDP uses them now (rebuilt after the 1st step)
            sizes.extend([0] * (index + 1 - len(sizes)))
        sizes[index] = buffer.numel() * buffer.element_size()
        call = Call("all_reduce", ("DDP gradient bucket", 0, "backward"), str(group), True,
                    buffer.numel() * buffer.element_size(), timer.next_seq(str(group)),
                    ddp=True)  # fmt: skip
        cuda = buffer.is_cuda
        call.start = _stamp(cuda)
        profiler = STATE.profiler
        if profiler is not None and profiler.state.recorder is not None:
            profiler.state.recorder.gradients_launched()  # the backward's compute is done here
        timer.enter()  # the all_reduce inside is this bucket, not a call of its own
        try:
            future = entry["delegate"](bucket)
        finally:
            timer.leave()

        def done(_):  # type: ignore[no-untyped-def]
            call.end = _stamp(cuda) if cuda else time.perf_counter_ns()

        future.add_done_callback(done)
        timer.keep(call)
        return future

    try:
        register(model, None, timed_bucket_hook)
    except Exception as exc:  # a DDP that refuses hooks (builtin hook set from C++, SyncBN...)
        settings.update(timed=False, note=f"DDP buckets not timed: register_comm_hook failed "
                        f"({type(exc).__name__}: {exc})")  # fmt: skip
        timer.notes.append(settings["note"])
        return
    settings.update(timed=True, hook="allreduce_hook (default, timed by torchdoctor)")
    delegates[model] = entry
