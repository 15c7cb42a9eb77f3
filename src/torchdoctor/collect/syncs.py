"""The sync audit: every host-device synchronization of a block of code, by source line.

``with torchdoctor.sync_audit() as audit:`` records each call that makes the host wait for the
device: ``.item()``, ``.tolist()``, ``.cpu()``, ``.to('cpu')``, ``.numpy()``, ``if t:``,
``float(t)``, ``int(t)``, ``f"{t}"``, ``print(t)``, boolean-mask indexing and assignment,
``nonzero``, one-argument ``torch.where``, ``unique``, ``masked_select``, ``repeat_interleave``
with tensor repeats, ``equal``, ``allclose``, ``bincount``, ``one_hot`` without ``num_classes``.
Two modes:

- ``thorough=False`` (default, "fast"): a ``TorchFunctionMode`` that looks at Python-level torch
  calls only; it is popped while a built-in ``torch.optim`` optimizer steps (they do not sync),
  and in ``zero_grad`` and ``clip_grad_norm_`` (unless ``error_if_nonfinite=True``).
  It sees syncs in user code, in backward code written in Python (custom autograd Functions)
  and in torch's Python code called from user code (``clip_grad_norm_(error_if_nonfinite=True)``).
- ``thorough=True``: adds a ``TorchDispatchMode`` classifying every aten operator by its tags,
  so syncs inside torch's C++-dispatched code and in backward formulas are seen too. It costs
  much more (see ``torchdoctor bench syncs``).

On a CPU run nothing really synchronizes: every event is a prediction ("would sync on CUDA"),
made only when the tensor read would live on the GPU (device residency, docs/syncs-residency.md:
host data such as ``torch.randint`` indices for a NumPy memmap is no sync); a sync inside an
installed package also names the user's line that led there, one made by torch's own Python
code the torch function (``inside``); optimizer step counters (kept on the CPU by torch), reads
inside ``torch.utils.data`` (samplers, collate, the user's Dataset: host tensors in a GPU run
too) and tensors already copied to the host by a recorded ``.cpu()`` are not counted. On CUDA
only calls on device tensors count, each sync's wall time is measured as its stall, and
``torch.cuda.set_sync_debug_mode("warn")`` warnings are merged in by line (CUDA paths are
untested in CI: no GPU). Numerics are untouched: every call runs exactly as it would.

Example:
    >>> import torch, torchdoctor
    >>> x = torch.arange(6.0)
    >>> with torchdoctor.sync_audit() as audit:
    ...     total = x.sum().item()
    ...     positive = x[x > 2]
    >>> sorted(r["kind"] for r in audit.records())
    ['bool_index', 'item']
"""

from __future__ import annotations

import sys
import time
import weakref
from typing import Any

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.overrides import _get_current_function_mode_stack

from torchdoctor.collect.lines_install import PENDING, run_pending
from torchdoctor.collect.residency import Residency, host_alias, source_names_cpu
from torchdoctor.collect.state import STATE
from torchdoctor.collect.syncs_cuda import CudaSyncWarnings, _device_name
from torchdoctor.collect.syncs_fold import FOLD_AT, fold_running_steps
from torchdoctor.collect.syncs_frames import (
    UserLineWarnings,
    call_warning_at_user_line,
    in_data_pipeline,
    in_optimizer_step_counter,
    sync_site,
    torch_site,
    user_frame,
)
from torchdoctor.collect.syncs_modes import (
    HOST_DEVICES,
    DispatchMode,
    FunctionMode,
    GradientUtilityBypass,
    ZeroGradBypass,
    first_tensor,
    mode_on_top,
)
from torchdoctor.collect.syncs_overhead import estimate_overhead
from torchdoctor.collect.syncs_records import group_records


class SyncAudit:
    """Collects sync events while active; see the module docstring. Use :func:`sync_audit`.

    Example:
        >>> x = torch.arange(3.0)
        >>> with SyncAudit(thorough=True) as audit:
        ...     n = int(x.nonzero().sum())
        >>> audit.summary()["mode"], sorted(r["kind"] for r in audit.records())
        ('thorough', ['int', 'nonzero'])
    """

    def __init__(self, thorough: bool = False, *, predict: bool | None = None) -> None:
        self.thorough = bool(thorough)
        #: True when events are predictions (no accelerator): every tensor counts as on-device.
        self.predict = (not torch.cuda.is_available()) if predict is None else bool(predict)
        self.function_calls = self.dispatch_calls = 0
        #: a fused attention kernel (scaled_dot_product_attention) was called while auditing
        self.fused_attention = False
        self._events: dict[tuple, list] = {}
        self._fold_at = FOLD_AT  # keys before per-step events are folded (syncs_fold.py)
        self._suppress = 0
        #: host-data marks (CPU runs only): which tensors would not live on the accelerator
        self.residency: Residency | None = Residency() if self.predict else None
        self._last_host_copy: tuple[Any, tuple] | None = None  # (weakref, user line)
        self._in_optimizer, self._popped_for_optimizer = 0, False
        self._deferred = False  # paused, but its mode still on the stack (see pause)
        self._function_mode: FunctionMode | None = None
        self._dispatch_mode: DispatchMode | None = None
        self._hooks: list[Any] = []
        self._cuda = CudaSyncWarnings(self._on_cuda_warning)
        self._started_ns: int | None = None
        self._elapsed_ns = 0
        self._paused = self.active = False

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> SyncAudit:
        if self.active:
            raise RuntimeError("this sync audit is already active; use a new sync_audit()")
        self._hooks = [
            register_optimizer_step_pre_hook(self._optimizer_pre),
            register_optimizer_step_post_hook(self._optimizer_post),
        ]
        if not self.thorough:
            self._hooks += [ZeroGradBypass(self), GradientUtilityBypass(self)]
        if self.residency is not None:
            self._hooks.extend(self.residency.install())
        self._hooks.append(UserLineWarnings())  # warnings raised under the mode: user's line
        try:
            if not self.predict:
                self._cuda.install()
            if self.thorough:
                self._dispatch_mode = DispatchMode(self)
                self._dispatch_mode.__enter__()
            self._function_mode = FunctionMode(self)
            self._function_mode.__enter__()
        except BaseException:
            self._remove()
            raise
        self.active = True
        self._started_ns = time.perf_counter_ns()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.stop()
        return False

    def stop(self) -> None:
        """End the audit (what ``with`` does at exit); calling it twice is harmless."""
        if not self.active:
            return
        self.resume()
        self.active = False
        self._elapsed_ns += time.perf_counter_ns() - (self._started_ns or 0)
        self._remove()

    def pause(self, in_place: bool = False) -> bool:
        """Stop intercepting calls until :meth:`resume` (the profiler pauses the audit outside
        its detail windows); True when paused. A thorough audit, or one with another torch
        function mode above its own, is not paused (False). ``in_place``: its mode stays on the
        stack, passing calls through (compiled code: Dynamo guards on it; collect/compiled.py).

        Example:
            >>> import torch
            >>> with sync_audit() as audit:
            ...     audit.pause()
            ...     _ = torch.ones(1).item()  # not seen
            ...     audit.resume()
            True
            >>> audit.records()
            []
        """
        if not self.active or self._paused:
            if self._deferred and not in_place and mode_on_top(self._function_mode):
                self._deferred = torch._C._pop_torch_function_stack() is None  # (now it can)
            return self._paused
        if self.thorough or self._function_mode is None:
            return False
        stack = _get_current_function_mode_stack()
        if in_place and (self._popped_for_optimizer or self._function_mode in stack):
            self._deferred = True  # (resume leaves it; the optimizer's post hook puts it back)
        elif self._popped_for_optimizer:  # off already; the optimizer's post hook leaves it off
            self._popped_for_optimizer = False
        elif mode_on_top(self._function_mode):
            torch._C._pop_torch_function_stack()
        elif self._function_mode not in stack:  # torch holds it
            self._deferred = True  # (in its handler: a step cut in backward()): see FunctionMode
        else:
            return False
        self._paused = True
        self._elapsed_ns += time.perf_counter_ns() - (self._started_ns or 0)
        return True

    def resume(self) -> None:
        """Intercept calls again after :meth:`pause` (a no-op when not paused)."""
        if not self._paused:
            return
        self._paused, self._started_ns = False, time.perf_counter_ns()
        if self._deferred:  # never came off the stack: it intercepts again as it is
            self._deferred = False
        elif self._function_mode is not None:
            torch._C._push_on_torch_function_stack(self._function_mode)

    def _remove(self) -> None:
        errors = []
        mode, self._function_mode = self._function_mode, None
        if mode is not None and not self._popped_for_optimizer:
            if mode_on_top(mode):
                mode.__exit__(None, None, None)
            else:
                errors.append("another TorchFunctionMode was left active above the audit's")
        self._popped_for_optimizer = False
        dispatch, self._dispatch_mode = self._dispatch_mode, None
        if dispatch is not None:
            try:
                dispatch.__exit__(None, None, None)
            except Exception as exc:  # keep removing the rest
                errors.append(repr(exc))
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._cuda.remove()
        if errors:
            raise RuntimeError(
                "torchdoctor's sync audit could not remove its modes cleanly: "
                + "; ".join(errors)
                + ". Exit inner modes before the audit (nest `with` blocks)."
            )

    # -- optimizer and backward --------------------------------------------------------------
    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._in_optimizer += 1
        builtin = type(optimizer).__module__.startswith("torch.optim")
        if (
            not self.thorough
            and builtin
            and type(optimizer).__name__ != "LBFGS"  # LBFGS reads the loss on the host
            and self._function_mode is not None
            and not self._popped_for_optimizer
            and mode_on_top(self._function_mode)
        ):
            torch._C._pop_torch_function_stack()
            self._popped_for_optimizer = True

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._in_optimizer = max(0, self._in_optimizer - 1)
        if self._popped_for_optimizer and self._function_mode is not None:
            torch._C._push_on_torch_function_stack(self._function_mode)
            self._popped_for_optimizer = False

    def _run_backward(self, mode: FunctionMode, func: Any, args: tuple, kwargs: dict) -> Any:
        """Run backward with the function mode active inside the autograd engine.

        A mode is popped while its handler runs, so without this a custom autograd Function
        calling ``.item()`` in backward would go unseen. The mode is pushed back only around
        the engine call, after torch's own ``__torch_function__`` checks.
        """
        target = getattr(func, "__wrapped__", func) if func is not torch.Tensor.backward else func
        autograd = torch.autograd
        engine = getattr(autograd, "_engine_run_backward", None)
        if engine is None:  # another torch version: backward syncs need thorough=True there
            return target(*args, **kwargs)

        def run_engine(*a: Any, **k: Any) -> Any:
            if mode_on_top(mode):
                return engine(*a, **k)
            torch._C._push_on_torch_function_stack(mode)
            try:
                return engine(*a, **k)
            finally:
                if mode_on_top(mode):
                    torch._C._pop_torch_function_stack()

        autograd._engine_run_backward = run_engine
        try:
            return target(*args, **kwargs)
        finally:
            autograd._engine_run_backward = engine
            if PENDING:  # what the backward's own handlers kept from being done: now
                run_pending()

    # -- events -----------------------------------------------------------------------------
    def _sync_call(self, kind: str, func: Any, args: tuple, kwargs: dict, python_level: bool):
        caller = sys._getframe(1)
        where = None
        residency = self.residency
        moves_to = None  # "host" / "device": where a .cpu() / .to(...) result lives
        if residency is not None:  # a CPU run: predict by device residency
            if kind == "item" and in_optimizer_step_counter(caller):
                counts = False
            elif in_data_pipeline(caller):
                counts = False  # the DataLoader's host tensors: no device sync on a GPU either
            elif python_level and func is not torch.Tensor.cpu and kind == "cpu":
                where = user_frame(caller)  # .to(device) vs .to("cpu")
                moves_to = "host" if source_names_cpu(where) else "device"
                counts = moves_to == "host" and not residency.all_host(args, kwargs)
            elif residency.all_host(args, kwargs):
                counts = False  # host data: no device to wait for
            else:
                moves_to = "host" if kind == "cpu" else None
                counts = True
                copy = self._last_host_copy
                if kind != "cpu" and copy is not None and copy[0]() is first_tensor(args, kwargs):
                    where = user_frame(caller)  # x.cpu().numpy(): the .cpu() paid for it
                    counts = where != copy[1]
        elif kind != "cpu" or python_level:
            tensor = first_tensor(args, kwargs)
            counts = tensor is not None and tensor.device.type not in HOST_DEVICES
        else:
            counts = True
        if not counts:
            self._suppress += 1
            try:
                result = call_warning_at_user_line(func, args, kwargs, caller)
            finally:
                self._suppress -= 1
            return self._placed(func, args, kwargs, result, moves_to)
        if where is None:
            where = user_frame(caller)
        self._suppress += 1
        start = time.perf_counter_ns()
        try:
            result = call_warning_at_user_line(func, args, kwargs, caller)
        finally:
            self._suppress -= 1
        stall = 0.0 if residency is not None else (time.perf_counter_ns() - start) / 1e6
        self._add(where, kind, stall, caller)
        return self._placed(func, args, kwargs, result, moves_to)

    def _placed(self, func: Any, args: tuple, kwargs: dict, result: Any, moves_to: str | None):
        """The result of a sync call, its residency recorded (CPU runs)."""
        residency = self.residency
        if residency is None or result is None:
            return result
        if moves_to == "host":
            if any(result is arg for arg in args):  # x.cpu() is x on a CPU run: a new object
                alias = host_alias(result)  # on its memory stands for the copy, else x stays
                if alias is not None:
                    return residency.mark_host(alias)
                self._last_host_copy = (weakref.ref(result), user_frame(sys._getframe(2)))
                return result
            return residency.mark_host(result)
        if moves_to == "device":
            return residency.mark_device(result)
        return residency.after_call(func, args, kwargs, result)

    def _phase_and_step(self) -> tuple[str, int]:
        """Phase, and step index: -1 without a profiler, -2 once it stopped collecting."""
        profiler = STATE.profiler
        if torch._C._current_autograd_node() is not None:
            phase = "backward"
        elif profiler is not None:
            phase = STATE.phase
        else:
            phase = "optimizer" if self._in_optimizer else "other"
        if profiler is None:
            return phase, -1
        recorder = getattr(profiler, "_rec", None)  # after max_steps the profiler stops
        if recorder is not None and not getattr(recorder, "recording", True):
            return phase, -2
        return phase, STATE.step_index

    def _add(self, where: tuple[str, int, str], kind: str, stall_ms: float, caller=None) -> None:
        phase, step = self._phase_and_step()
        # inside an installed package: the user's own line too; torch's code: its function
        own = sync_site(caller)[1] if caller is not None and where[0] else None
        key = (*where, kind, phase, step, own, torch_site(caller) if caller is not None else None)
        entry = self._events.get(key)
        if entry is None:
            self._events[key] = [1, stall_ms]
            if len(self._events) > self._fold_at and step >= 0:  # bounded on long runs
                fold_running_steps(self, STATE.profiler, step)
        else:
            entry[0] += 1
            entry[1] += stall_ms

    def _on_cuda_warning(self) -> None:
        self._add(user_frame(sys._getframe(1)), "cuda_sync_warning", 0.0)

    # -- results ----------------------------------------------------------------------------
    def records(
        self, first_step: int = 0, num_steps: int | None = None, audited_steps: int | None = None,
        **outliers: Any,
    ) -> list[dict[str, Any]]:
        """SyncRecords (docs/session-schema.md) grouped by (file, line, kind), most frequent first.

        Under a profiler, only events of steps ``first_step .. first_step + num_steps - 1``
        count and ``per_step = count / audited_steps`` (the steps of that range the audit was
        not paused in; by default ``num_steps``, itself by default the steps seen from
        ``first_step`` on). Without a profiler the whole audit is one step. ``stall_ms``
        is the measured wait per step (CUDA only; None on a CPU run). ``outlier_steps`` and
        ``outlier_rate``: see :func:`~torchdoctor.collect.syncs_records.group_records`.
        """
        return group_records(
            self._events, self.predict, first_step, num_steps, audited_steps, **outliers
        )

    def summary(self) -> dict[str, Any]:
        """``session["sync_audit"]``: mode, device, and the audit's estimated own overhead."""
        running = self.active and self._started_ns and not self._paused
        elapsed = self._elapsed_ns + (time.perf_counter_ns() - self._started_ns if running else 0)
        overhead = estimate_overhead(
            self.function_calls, self.dispatch_calls, elapsed / 1e6, SyncAudit
        )
        return {
            "mode": "thorough" if self.thorough else "fast",
            "device": _device_name(self.predict),
            "predicted": self.predict,
            "overhead_pct": overhead["overhead_pct"],
            "overhead_ms": overhead["overhead_ms"],
            "overhead_method": overhead["method"],
            "intercepted_calls": self.function_calls + self.dispatch_calls,
            "audited_ms": elapsed / 1e6,
        }

    def table(self, first_step: int = 0, num_steps: int | None = None) -> str:
        """The sync table as plain text (what ``str(audit)`` prints)."""
        from torchdoctor.session import view  # the "sync_table" view: torchdoctor.views

        return view("sync_table")(self.records(first_step, num_steps), self.summary())

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        mode = "thorough" if self.thorough else "fast"
        return f"<SyncAudit {mode} active={self.active} lines={len(self.records())}>"


def sync_audit(thorough: bool = False) -> SyncAudit:
    """Audit host-device syncs of a block: ``with torchdoctor.sync_audit() as audit: ...``.

    ``thorough=True`` also inspects every aten operator (syncs inside torch's own C++-level
    code and backward formulas) at a much higher cost. ``print(audit)`` shows the table;
    ``audit.records()`` and ``audit.summary()`` give the Session data.

    Example:
        >>> import torch, torchdoctor
        >>> t = torch.ones(3)
        >>> with torchdoctor.sync_audit() as audit:
        ...     if t.sum() > 0:
        ...         pass
        >>> [(r["kind"], r["per_step"]) for r in audit.records()]
        [('bool', 1.0)]
    """
    if not isinstance(thorough, bool):
        raise TypeError(
            f"thorough must be True or False, got {thorough!r}; pass thorough=True to also "
            "inspect aten operators inside torch's own code"
        )
    return SyncAudit(thorough)
