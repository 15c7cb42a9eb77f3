"""Find the user's source line on the Python stack, skipping torch's and torchdoctor's own frames.

A sync inside torch's code (``clip_grad_norm_(error_if_nonfinite=True)`` testing a tensor in an
``if``) is attributed to the user line that called into torch. Library frames are: torch (and
functorch), torchdoctor's collection machinery (``collect/``, ``commands/``, ``bench/``, the CLI;
not ``workloads/``, ``ops/`` or ``train/``, which are code a user runs), and the Python standard
library (``logging`` formatting a tensor is the caller's sync), and the Python torch.compile
generates (Inductor's output code). Classification is cached per code object, so a lookup costs
a few dictionary reads per frame.

Example:
    >>> from torchdoctor.collect.syncs_frames import user_frame
    >>> user_frame()[2]  # (file, line, function) of the caller
    '<module>'
"""

from __future__ import annotations

import os
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any

import torch

import torchdoctor
from torchdoctor.collect.source_lines import source_text
from torchdoctor.session_read import compiled_output


def _dir(path: str) -> str:
    return os.path.dirname(os.path.abspath(path)) + os.sep


_TORCH = _dir(torch.__file__)
_PACKAGE = _dir(torchdoctor.__file__)
_OWN = tuple(
    _PACKAGE + name
    for name in ("collect" + os.sep, "commands" + os.sep, "bench" + os.sep, "integrations" + os.sep,
                 "cli.py", "__main__.py")  # (integrations: a callback's wrapper of trainer.train)
) + (_PACKAGE + "testing.py",)
_STDLIB = tuple({os.path.abspath(p) + os.sep for p in (sysconfig.get_paths()["stdlib"],) if p})
_SITE = ("site-packages", "dist-packages")
_extra_prefixes: list[str] = []

_library_cache: dict[CodeType, bool] = {}


def _is_library(code: CodeType) -> bool:
    cached = _library_cache.get(code)
    if cached is not None:
        return cached
    name = code.co_filename
    if name.startswith("<frozen") or name.startswith(_TORCH) or name.startswith(_OWN):
        result = True
    elif name.startswith(_STDLIB):
        result = not any(marker in name for marker in _SITE)
    else:
        result = any(name.startswith(prefix) for prefix in _extra_prefixes)
    if not result and "functorch" in name.split(os.sep)[-3:-1]:
        result = True
    if not result and compiled_output(name):
        result = True
    _library_cache[code] = result
    return result


def skip_paths(*prefixes: str) -> None:
    """Treat more directories as library code (their frames are skipped like torch's).

    Example:
        >>> import tempfile
        >>> vendored = tempfile.mkdtemp()
        >>> code = compile("pass", os.path.join(vendored, "lib.py"), "exec")
        >>> _is_library(code)
        False
        >>> skip_paths(vendored)
        >>> _is_library(code)
        True
        >>> _extra_prefixes.remove(os.path.abspath(vendored)); _library_cache.clear()  # undo
    """
    _extra_prefixes.extend(os.path.abspath(p) for p in prefixes)
    _library_cache.clear()


def user_code_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost frame from ``frame`` outward that is not library code (None if none).

    Example:
        >>> user_code_frame(sys._getframe()).f_code.co_name
        '<module>'
    """
    while frame is not None and _is_library(frame.f_code):
        frame = frame.f_back
    return frame


def user_frame(frame: FrameType | None = None) -> tuple[str, int, str]:
    """``(file, line, function)`` of the innermost frame that is not library code.

    Starts at ``frame`` (default: the caller's frame). When every frame is library code (a
    sync in an autograd engine thread on CUDA has no Python caller), returns the innermost
    frame that is not torchdoctor's own, or ``("<unknown>", 0, "<unknown>")``.

    Example:
        >>> file, line, function = user_frame(sys._getframe())
        >>> file.startswith("<doctest"), function
        (True, '<module>')
    """
    f = frame if frame is not None else sys._getframe(1)
    fallback = None
    while f is not None:
        code = f.f_code
        if not _is_library(code):
            return code.co_filename, f.f_lineno or 0, code.co_name
        if fallback is None and not code.co_filename.startswith(_OWN):
            fallback = (code.co_filename, f.f_lineno or 0, code.co_name)
        f = f.f_back
    return fallback or ("<unknown>", 0, "<unknown>")


_third_party_cache: dict[CodeType, bool] = {}


def _is_third_party(code: CodeType) -> bool:
    """Code of an installed package (site-packages / dist-packages): not the user's own."""
    cached = _third_party_cache.get(code)
    if cached is None:
        parts = code.co_filename.split(os.sep)
        cached = _third_party_cache[code] = any(marker in parts for marker in _SITE)
    return cached


def package_of(path: str) -> str | None:
    """The installed package a file belongs to (the folder under site-packages), or None.

    Example:
        >>> package_of("/venv/lib/python3.11/site-packages/transformers/trainer.py")
        'transformers'
        >>> package_of("/home/me/train.py") is None
        True
    """
    parts = os.path.normpath(path).split(os.sep)
    for marker in _SITE:
        if marker in parts:
            index = len(parts) - 1 - parts[::-1].index(marker)
            if index + 1 < len(parts):
                name = parts[index + 1]
                return name[:-3] if name.endswith(".py") else name
    return None


def own_frame(frame: FrameType | None) -> tuple[str, int, str] | None:
    """``(file, line, function)`` of the innermost frame in the user's own files: neither
    library code (see :func:`user_frame`) nor an installed package (site-packages). None when
    there is none (the whole stack is library code).

    Example:
        >>> import sys
        >>> own_frame(sys._getframe())[2]
        '<module>'
    """
    f = frame
    while f is not None:
        code = f.f_code
        if not _is_library(code) and not _is_third_party(code):
            return code.co_filename, f.f_lineno or 0, code.co_name
        f = f.f_back
    return None


#: torch's dispatch plumbing: a sync is named by the torch function above these
_PLUMBING = tuple(
    os.path.join(*parts)
    for parts in (("overrides.py",), ("_tensor.py",), ("_ops.py",), ("utils", "_contextlib.py"),
                  ("utils", "_python_dispatch.py"), ("utils", "_device.py"))
)  # fmt: skip


def torch_site(frame: FrameType | None) -> str | None:
    """The torch function a sync happens in when torch's own Python code made it (a
    distribution validating its arguments, GradScaler reading found_inf): ``"path/under/
    torch.py:function"``; None when the user's line made it directly.

    Example:
        >>> import sys
        >>> torch_site(sys._getframe()) is None  # a doctest is user code
        True
    """
    f = frame
    while f is not None:
        code = f.f_code
        if not _is_library(code):
            return None
        name = code.co_filename
        if name.startswith(_TORCH) and not name.endswith(_PLUMBING):
            return f"{name[len(_TORCH) :].replace(os.sep, '/')}:{code.co_name}"
        f = f.f_back
    return None


def sync_site(frame: FrameType | None) -> tuple[tuple[str, int, str], tuple[str, int, str] | None]:
    """Where a sync happens (:func:`user_frame`) and, when that is inside an installed package,
    the user's own line that led there (:func:`own_frame`; None otherwise).

    Example:
        >>> import sys
        >>> where, own = sync_site(sys._getframe())
        >>> where[2], own
        ('<module>', None)
    """
    where = user_frame(frame)
    if not any(marker in where[0].split(os.sep) for marker in _SITE):
        return where, None
    own = own_frame(frame)
    return where, (own if own != where else None)


def call_warning_at_user_line(func: Callable, args: tuple, kwargs: dict, frame: FrameType) -> Any:
    """``func(*args, **kwargs)``, with the warnings it raises re-issued at the user's line.

    A warning raised by torch's C++ code (``float(loss)`` on a tensor that requires grad) names
    the innermost Python frame, which inside the audit is torchdoctor's wrapper; the user would
    see their own line without torchdoctor, so the warning is caught and issued again there
    (with that module's registry, so the usual once-per-line filtering still applies). A
    warning raised by Python code (a library's ``warnings.warn``) is issued again where it
    named.

    Example:
        >>> def noisy(x):
        ...     warnings.warn("careful")
        ...     return x + 1
        >>> with warnings.catch_warnings(record=True) as shown:
        ...     warnings.simplefilter("always")
        ...     call_warning_at_user_line(noisy, (2,), {}, sys._getframe())
        3
        >>> [(str(w.message), w.filename.startswith("<doctest")) for w in shown]
        [('careful', True)]
    """
    if isinstance(getattr(warnings.showwarning, "__self__", None), UserLineWarnings):
        # the audit's display hook moves them to the user's line as they are shown: no
        # catch_warnings (entering one clears every module's once-per-line registry, so a
        # library warning came back at each audited read: 6 times in mnist_rnn instead of 1)
        return func(*args, **kwargs)
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return func(*args, **kwargs)
    finally:
        if caught:
            _reissue(caught, frame)


def _warn_in(names: dict, message: Any, category: Any, filename: str, lineno: int,
             source: bool = False) -> None:
    """``warnings.warn_explicit`` at ``filename:lineno`` as the module whose globals are
    ``names`` would issue it: its once-per-line registry and its name for the filters by
    module (none when it has no name: ``module=None`` makes Python drop the warning); with
    ``source``, its globals too, for the line's source (falling back without them when a
    script's globals have no loader to ask: Python 3.12)."""
    registry = names.setdefault("__warningregistry__", {})
    name = names.get("__name__")
    module = {"module": name} if isinstance(name, str) else {}
    if source:
        try:
            warnings.warn_explicit(message, category, filename, lineno, registry=registry,
                                   module_globals=names, **module)  # fmt: skip
            return
        except (ImportError, ValueError, AttributeError):  # (a module run as __main__ by
            pass  # `run -m`: its loader knows another name)
    warnings.warn_explicit(message, category, filename, lineno, registry=registry, **module)


def _module_of(filename: str) -> Any:
    """The loaded module whose file is ``filename``, or None."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == filename:
            return module
    return None


def _reissue(caught: list, frame: FrameType | None) -> None:
    user = frame
    while user is not None and _is_library(user.f_code):
        user = user.f_back
    for record in caught:
        if not str(record.filename).startswith(_PACKAGE):  # raised by Python code (torch's
            # dropout.py): Python named that line, as it would without the audit
            module = _module_of(record.filename)  # (its registry: once per line, as Python)
            _warn_in(vars(module) if module is not None else {}, record.message,
                     record.category, record.filename, record.lineno)  # fmt: skip
            continue
        if user is None:
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
            continue
        _warn_in(user.f_globals, record.message, record.category, user.f_code.co_filename,
                 user.f_lineno or 0, source=True)  # fmt: skip


_OPTIM = _TORCH + "optim" + os.sep


def _callers(frame: FrameType | None, depth: int) -> Iterator[CodeType]:
    """The code objects of ``frame`` and up to ``depth - 1`` of its callers, innermost first."""
    while frame is not None and depth > 0:
        yield frame.f_code
        frame = frame.f_back
        depth -= 1


def in_optimizer_step_counter(frame: FrameType | None = None, depth: int = 8) -> bool:
    """True when the call comes from torch.optim reading its step counter (``_get_value``).

    Optimizers keep their step counters on the CPU even when the parameters are on a GPU, so
    ``step.item()`` there never waits for the device; a CPU run must not predict a sync for it.

    Example:
        >>> in_optimizer_step_counter(sys._getframe())  # a doctest, not torch.optim's _get_value
        False
    """
    return any(
        code.co_name == "_get_value" and code.co_filename.startswith(_OPTIM)
        for code in _callers(frame if frame is not None else sys._getframe(1), depth)
    )


_DATA = _TORCH + "utils" + os.sep + "data" + os.sep


def in_data_pipeline(frame: FrameType | None = None, depth: int = 16) -> bool:
    """True when the call comes from ``torch.utils.data``: a sampler (``randperm().tolist()``),
    the fetcher, ``default_collate``, or the user's ``Dataset`` / ``collate_fn`` that they call.

    The DataLoader produces host tensors in a GPU run too (they reach the device after the
    loop body's ``.to(device)``), so what it reads back costs no device sync; a CPU run must
    not predict one there.

    Example:
        >>> class Probe(torch.utils.data.Dataset):
        ...     def __len__(self):
        ...         return 1
        ...     def __getitem__(self, i):
        ...         return in_data_pipeline()
        >>> list(torch.utils.data.DataLoader(Probe(), batch_size=None)), in_data_pipeline()
        ([True], False)
    """
    return any(
        code.co_filename.startswith(_DATA)
        for code in _callers(frame if frame is not None else sys._getframe(1), depth)
    )


_OVERRIDES = _TORCH + "overrides.py"


def _named_without_us(frame: FrameType | None, filename: str, lineno: int) -> FrameType | None:
    """The frame a warning shown at ``filename:lineno`` (a frame of our collection code) would
    have named without that code: a library's ``warnings.warn(..., stacklevel=2)`` called
    again by the audit's mode names the mode's frame, where Python would name the library
    function's caller (torch's ``dropout.py``, not the user's line). ``frame``: the stack
    from the warning machinery outwards; None when the named frame is not on it."""
    caller = None  # the code that issued the warning (Python's warnings module skipped)
    while frame is not None and caller is None:
        if frame.f_code.co_filename != warnings.__file__:
            caller = frame.f_code
        elif frame.f_back is None:
            return None
        frame = frame if caller is not None else frame.f_back
    while frame is not None and not (
        frame.f_code.co_filename == filename and frame.f_lineno == lineno
    ):
        frame = frame.f_back
    while frame is not None and (
        frame.f_code.co_filename.startswith(_OWN)
        or frame.f_code.co_filename == _OVERRIDES
        or frame.f_code is caller  # the call the mode dispatched again: its first entry
    ):
        frame = frame.f_back
    return frame


class UserLineWarnings:
    """While installed, a warning shown at a line of torchdoctor's own collection code (the
    sync audit's mode calls torch, and a warning raised in C++ names the innermost Python
    frame: the mode's) is shown at the line Python would name without that code: the
    user's line, or a library's own (``stacklevel`` counted past the mode's frames). Display only: ``remove()`` restores
    ``warnings.showwarning`` unless someone replaced it since.

    Example:
        >>> import warnings
        >>> hook = UserLineWarnings()
        >>> warnings.showwarning == hook._show
        True
        >>> hook.remove(); warnings.showwarning == hook._show
        False
    """

    def __init__(self) -> None:
        self._original = warnings.showwarning
        warnings.showwarning = self._show

    def _show(self, message: Any, category: Any, filename: str, lineno: int,
              file: Any = None, line: Any = None) -> None:  # fmt: skip
        if filename.startswith(_OWN):
            named = _named_without_us(sys._getframe(1), filename, lineno)
            if named is not None:  # issued again there: Python's once-per-line registry,
                # its version and the filters by module then hold as without the audit
                _warn_in(named.f_globals, message, category, named.f_code.co_filename,
                         named.f_lineno or 0)  # fmt: skip
                return
            user_file, user_line, _ = user_frame(sys._getframe(1))
            if user_file != "<unknown>":
                filename, lineno, line = user_file, user_line, None
        self._original(message, category, filename, lineno, file, line)

    def remove(self) -> None:
        if warnings.showwarning == self._show:
            warnings.showwarning = self._original


def own_line(file: str, own: tuple[str, int, str]) -> dict[str, Any]:
    """The SyncRecord fields naming the user's line that called into a package's sync.

    Example:
        >>> own_line("/v/site-packages/fakelib/x.py", ("<nowhere>", 4, "main"))["library"]
        'fakelib'
    """
    return {
        "library": package_of(file),
        "user_file": own[0],
        "user_line": own[1],
        "user_function": own[2],
        "user_op": source_text(own[0], own[1], "call"),
    }
