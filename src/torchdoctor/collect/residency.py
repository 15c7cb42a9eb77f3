"""Device residency on a CPU run: which tensors would live on the accelerator in a GPU run.

A CPU run predicts the syncs a GPU run would have; only a read of *device* data is one. A
tensor is known **host data** when the audit saw it made on the host: a factory call without a
``device`` argument (``torch.randint``, ``torch.tensor``, ``torch.zeros`` ...),
``torch.from_numpy``, a batch a ``DataLoader`` returned, a copy to the host (``.cpu()``,
``.to("cpu")`` on a line that names the CPU), an op whose tensor inputs are all host data (``ix + 1``, ``torch.stack(host_list)``, the
elements of ``for i in ix``, a ``.to(torch.float32)`` that names no device), or a view of host
data (not itself moved with ``.to(device)``). Every
other tensor counts as device data: parameters, buffers (unmarked when registered), tensors
moved with ``.to(device)`` / ``.cuda()`` (even when ``device`` is the CPU in this run), tensors
made with ``device=...``, whatever is computed from any of them (so module outputs are device
data through the parameters they use), and tensors whose making the audit did not see.

The marks are a dictionary ``id(tensor) -> weakref`` (no attribute on the user's tensors, so
nothing leaks into checkpoints); entries whose tensor was freed are dropped in batches (a weak
reference's callback could swallow a Ctrl-C). Propagation runs in the
sync audit's TorchFunctionMode for every call it passes through, and costs one dictionary lookup
per call whose first tensor is device data. See docs/syncs-residency.md for the rule and limits.

Example:
    >>> import torch
    >>> residency = Residency()
    >>> ix = residency.after_call(torch.randint, (10, (3,)), {}, torch.randint(10, (3,)))
    >>> residency.all_host((ix,), {}), residency.all_host((torch.nn.Parameter(ix.float()),), {})
    (True, False)
"""

from __future__ import annotations

import functools
import linecache
import re
import sys
import weakref
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import torch
from torch.nn.modules.module import register_module_buffer_registration_hook

from torchdoctor.collect.lines_install import Replaced
from torchdoctor.collect.syncs_frames import user_frame

_T = torch.Tensor
#: marks (live or dead) past which the dead ones are dropped; then twice the live ones
PRUNE_AT = 4096

#: factory functions: no tensor input, so the result is host data unless ``device=`` is given.
FACTORIES: frozenset = frozenset(
    f
    for f in (
        torch.tensor,
        torch.as_tensor,
        getattr(torch, "asarray", None),
        torch.zeros,
        torch.ones,
        torch.empty,
        torch.full,
        torch.rand,
        torch.randn,
        torch.randint,
        torch.randperm,
        torch.arange,
        torch.linspace,
        torch.logspace,
        torch.eye,
        torch.empty_strided,
        torch.tril_indices,
        torch.triu_indices,
        torch.scalar_tensor,
        torch.normal,
    )
    if f is not None
)
#: calls whose result is moved to a device (``.to`` only when it names one: see _to_target)
MOVES: frozenset = frozenset((_T.cuda, _T.to))


def _to_target(args: tuple, kwargs: dict | None) -> Any:
    """What ``Tensor.to(...)`` moves to: a device (str, torch.device, index), a tensor (its
    device), or None when it names none (``.to(torch.float16)``, ``.to(None)``: the result
    stays where its input is).

    Example:
        >>> x = torch.ones(1)
        >>> _to_target((x, "cuda"), {}), _to_target((x, torch.half), {}), _to_target((x, None), {})
        ('cuda', None, None)
    """
    if kwargs and kwargs.get("device") is not None:
        return kwargs["device"]
    for value in args[1:]:
        if isinstance(value, str | torch.device | _T) or (
            type(value) is int  # .to(0): a device index
        ):
            return value
    return None


def line_names_cpu(frame: FrameType | None) -> bool:
    """Whether the user's source line at ``frame`` names the CPU (``.to("cpu")``,
    ``device="cpu"``): on a CPU run ``x.to(device)`` and ``x.to("cpu")`` are the same call, and
    only the text tells a copy to the host from a move to the accelerator.

    Example:
        >>> import sys
        >>> line_names_cpu(sys._getframe()), "cpu"  # this very line names the CPU
        (True, 'cpu')
    """
    return source_names_cpu(user_frame(frame))


def source_names_cpu(where: tuple[str, int, str]) -> bool:
    """Whether the source line ``(file, line, function)`` names the CPU (see above).

    Example:
        >>> source_names_cpu((__file__, 1, "?"))  # "Device residency on a CPU run: ..."
        True
        >>> source_names_cpu(("no/such/file.py", 1, "f"))  # no source to read
        False
    """
    return names_cpu(linecache.getline(where[0], where[1] or 0))


#: an assignment's target, left out: ``real_cpu = data[0].to(device)`` (DCGAN) moves the
#: batch to the device, whatever the variable is called
_TARGET = re.compile(r"^\s*[\w.\[\], ]+?\s*(?<![=!<>])=(?!=)")
#: the CPU named as a device: "cpu" / 'cpu:0', .cpu(), a name starting with cpu (cpu_device)
_CPU = re.compile(r"""['"]cpu(:\d+)?['"]|\.cpu\(|(?<![\w.])cpu\w*""", re.IGNORECASE)


def names_cpu(code: str) -> bool:
    """Whether a line of code names the CPU as a device (outside its comment and the target
    of its assignment).

    Example:
        >>> names_cpu('y = x.to("cpu")'), names_cpu("y = x.to(cpu_device)"), names_cpu("x.cpu()")
        (True, True, True)
        >>> names_cpu("real_cpu = data[0].to(device)"), names_cpu("x.to(device)  # cpu here")
        (False, False)
    """
    code = code.split("#", 1)[0]
    return bool(_CPU.search(_TARGET.sub("", code, count=1)))


class Residency:
    """Marks of host data for one sync audit; see the module docstring.

    Example:
        >>> import torch
        >>> r = Residency()
        >>> t = r.mark_host(torch.zeros(2))
        >>> r.is_host(t), r.is_host(torch.zeros(2))
        (True, False)
    """

    __slots__ = ("_host", "_moved", "_prune_at", "__weakref__")

    def __init__(self) -> None:
        self._host: dict[int, weakref.ref] = {}
        #: views of host data moved to the device by a call that returned them unchanged
        #: (``batch[0].to(device)`` on a CPU run): their base's mark does not hold for them
        self._moved: dict[int, weakref.ref] = {}
        self._prune_at = PRUNE_AT

    def __len__(self) -> int:
        """The live host marks.

        Example:
            >>> import torch
            >>> r = Residency()
            >>> kept, freed = r.mark_host(torch.zeros(2)), r.mark_host(torch.zeros(2))
            >>> del freed
            >>> len(r)
            1
        """
        return sum(ref() is not None for ref in self._host.values())

    def _added(self) -> None:
        """A mark was added: drop the dead ones once the marks doubled since the last time.
        (Weak references carry no callback: a Ctrl-C that lands in a Python callback run when
        a tensor is freed is printed and lost, and a loop freeing thousands of small tensors a
        second, an RL agent's, kept running under ``torchdoctor run`` after SIGINT.)"""
        if len(self._host) + len(self._moved) > self._prune_at:
            for marks in (self._host, self._moved):
                for key in [key for key, ref in marks.items() if ref() is None]:
                    del marks[key]
            self._prune_at = max(PRUNE_AT, 2 * (len(self._host) + len(self._moved)))

    def is_host(self, tensor: Any) -> bool:
        """Whether ``tensor`` is known host data: marked, or a view of marked data (the
        elements of a host tensor iterated while the audit was paused between windows).

        Example:
            >>> r = Residency()
            >>> steps = r.mark_host(torch.arange(4))
            >>> r.is_host(steps[1]), r.is_host(r.mark_device(steps[2])), r.is_host(steps + 1)
            (True, False, False)
        """
        ref = self._host.get(id(tensor))
        if ref is not None:
            return ref() is tensor
        base = tensor._base
        if base is None:
            return False
        ref = self._host.get(id(base))
        if ref is None or ref() is not base:
            return False
        moved = self._moved.get(id(tensor))
        return moved is None or moved() is not tensor

    def mark_host(self, value: Any) -> Any:
        """Mark a tensor (or the tensors of a tuple/list) as host data; returns ``value``."""
        if isinstance(value, _T):
            self._host[id(value)] = weakref.ref(value)
            self._added()
        elif isinstance(value, tuple | list):
            for item in value:
                if isinstance(item, _T):
                    self.mark_host(item)
        return value

    def mark_device(self, value: Any) -> Any:
        """Forget a host mark: ``value`` (a tensor, or a tuple/list of them) is device data."""
        if isinstance(value, _T):
            key = id(value)
            self._host.pop(key, None)
            if value._base is not None:
                self._moved[key] = weakref.ref(value)
                self._added()
        elif isinstance(value, tuple | list):
            for item in value:
                if isinstance(item, _T):
                    self.mark_device(item)
        return value

    def all_host(self, args: tuple, kwargs: dict | None) -> bool:
        """True when the call has tensor inputs and every one is host data (one level into
        lists and tuples: ``torch.stack([a, b])``); False at the first device tensor."""
        is_host = self.is_host
        seen = False
        for value in (*args, *kwargs.values()) if kwargs else args:
            if isinstance(value, _T):
                if not is_host(value):
                    return False
                seen = True
            elif isinstance(value, tuple | list) and value and isinstance(value[0], _T):
                for item in value:
                    if isinstance(item, _T):
                        if not is_host(item):
                            return False
                        seen = True
        return seen

    def after_call(self, func: Any, args: tuple, kwargs: dict | None, result: Any) -> Any:
        """Propagate marks from a call's inputs to its result; returns ``result``.

        Example:
            >>> import torch
            >>> r = Residency()
            >>> x = r.after_call(torch.zeros, (3,), {}, torch.zeros(3))
            >>> y = r.after_call(torch.add, (x, 1), {}, x + 1)
            >>> z = r.after_call(torch.zeros, (3,), {"device": x.device}, torch.zeros(3))
            >>> r.is_host(y), r.is_host(z)
            (True, False)
        """
        if args:  # fast path: the first input is device data, so is the result (most calls)
            first = args[0]
            if isinstance(first, _T):
                host = self._host
                if host.get(id(first)) is None:  # (nor a view of host data: is_host's rule)
                    base = first._base
                    if base is None or host.get(id(base)) is None:
                        return result
        if func in FACTORIES:
            if not kwargs or kwargs.get("device") is None or line_names_cpu(sys._getframe(1)):
                self.mark_host(result)
            return result
        if func in MOVES:
            target = _T.cuda if func is _T.cuda else _to_target(args, kwargs)
            if target is None:  # a dtype-only .to(...), or .to(None): stays where it was
                return self._propagate(args, kwargs, result)
            if isinstance(target, _T):  # .to(other): lives where other does
                return self.mark_host(result) if self.is_host(target) else self.mark_device(result)
            return self.mark_device(result)
        return self._propagate(args, kwargs, result)

    def _propagate(self, args: tuple, kwargs: dict | None, result: Any) -> Any:
        if self._host and result is not None and self.all_host(args, kwargs):
            self.mark_host(result)
        return result

    def install(self) -> list[Any]:
        """What keeps the marks right beyond the audit's mode, as handles with ``remove()``:
        a buffer registered on a module is device data (it lives where its module does), while
        ``torch.from_numpy`` (not dispatched to torch-function modes) and a ``DataLoader``'s
        ``next()`` make host data (its workers' tensors are made in other processes, out of
        the audit's sight; a GPU run copies the batch with ``.to(device)`` too).

        Example:
            >>> import numpy as np, torch
            >>> r = Residency()
            >>> before = torch.from_numpy
            >>> handles = r.install()
            >>> t = torch.from_numpy(np.zeros(2))
            >>> for handle in handles: handle.remove()
            >>> r.is_host(t), torch.from_numpy is before
            (True, True)
        """

        def buffer_registered(module: Any, name: str, buffer: Any) -> None:
            if buffer is not None:
                self.mark_device(buffer)

        from torch.utils.data.dataloader import _BaseDataLoaderIter

        mark_batch = weakref.WeakMethod(self.mark_batch)  # (a wrapper left behind is harmless)

        @functools.wraps(_BaseDataLoaderIter.__next__)
        def next_batch(iterator: Any, _next: Any = _BaseDataLoaderIter.__next__) -> Any:
            batch = _next(iterator)
            mark = mark_batch()
            return batch if mark is None else mark(batch)

        return [register_module_buffer_registration_hook(buffer_registered),
                Replaced(torch, "from_numpy", _marking(torch.from_numpy, self.mark_host)),
                Replaced(_BaseDataLoaderIter, "__next__", next_batch)]  # fmt: skip

    def mark_batch(self, batch: Any, depth: int = 3) -> Any:
        """Mark the tensors of a data batch host data: a tensor, or those inside tuples, lists
        and mappings (a Hugging Face ``BatchEncoding``) up to ``depth`` levels; returns
        ``batch``.

        Example:
            >>> import torch
            >>> r = Residency()
            >>> batch = r.mark_batch({"input_ids": torch.zeros(2), "extra": [torch.ones(1)]})
            >>> r.is_host(batch["input_ids"]), r.is_host(batch["extra"][0])
            (True, True)
        """
        if isinstance(batch, _T):
            return self.mark_host(batch)
        if depth <= 0:
            return batch
        if isinstance(batch, tuple | list):
            items = batch
        elif isinstance(batch, Mapping):
            items = batch.values()
        else:
            return batch
        for item in items:
            self.mark_batch(item, depth - 1)
        return batch


def _marking(make: Callable[..., Any], mark: Callable[[Any], Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return mark(make(*args, **kwargs))

    wrapper.__name__ = wrapper.__qualname__ = getattr(make, "__name__", "wrapper")
    wrapper.__doc__ = make.__doc__
    return wrapper


def host_alias(tensor: Any) -> Any:
    """On a CPU run ``x.cpu()`` returns ``x`` itself, so the copy could not be marked host
    without marking ``x``: a new tensor object on the same memory (``aten.alias``, no copy)
    stands for the copy instead, as on a GPU run, where ``.cpu()`` makes a new tensor. None
    (keep ``x``) for a tensor that requires grad (a leaf would stop being one), a subclass or
    a non-strided layout.

    Example:
        >>> import torch
        >>> x = torch.arange(3)
        >>> y = host_alias(x)
        >>> y is x, y.data_ptr() == x.data_ptr(), host_alias(torch.ones(2, requires_grad=True))
        (False, True, None)
    """
    if type(tensor) is not _T or tensor.requires_grad or tensor.layout != torch.strided:
        return None
    try:
        with torch._C.DisableTorchFunction():
            return torch.ops.aten.alias.default(tensor)
    except Exception:  # an unusual tensor: keep it as it is
        return None
