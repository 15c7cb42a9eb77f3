"""Run an unmodified Python script in this process, as ``python SCRIPT ARGS...`` would.

The script runs as ``__main__`` with ``sys.argv = [SCRIPT, *ARGS]`` and its directory first on
``sys.path``; its output goes where it would. Whatever way it ends (normally, by an exception,
``sys.exit(n)`` or Ctrl-C) :func:`run_script` returns a :class:`ScriptOutcome` with the exit code
Python would have used (exceptions and Ctrl-C also print their traceback, without torchdoctor's
frames) instead of ending the process, so the caller can still write its session. ``sys.argv``,
``sys.path`` and ``sys.modules["__main__"]`` are restored afterwards.

``--step-fn``: :func:`load_script` can wrap one function of the script (by qualified name,
``train_step`` or ``Trainer.step``) or of an importable module (``pkg.mod:train_step``) so each
call of it calls back; the script's source is not changed on disk and line numbers stay.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "hello.py")
    >>> _ = open(path, "w").write("import sys\\nsys.exit(3)\\n")
    >>> run_script(load_script(path)).exit_code
    3
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import functools
import importlib
import os
import sys
import tokenize
import traceback
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torchdoctor.collect.notebook import is_notebook, notebook_globals, notebook_source
from torchdoctor.collect.script_options import note_settings, watching_options
from torchdoctor.collect.sigint import sigint_outside_collectors
from torchdoctor.collect.sigterm import Terminated, sigterm_as_interrupt

_HOOK_NAME = "__torchdoctor_step_fn__"
EXIT_CTRL_C = 130  # what a shell reports for a Python killed by SIGINT
EXIT_SIGTERM = 143  # ... and by SIGTERM (128 + 15)


def _stopped_by(exc: BaseException) -> BaseException | None:
    """The SIGTERM (:class:`Terminated`) or Ctrl-C that ``exc`` was raised while handling
    (Python's "During handling of the above exception"), or None.

    Example:
        >>> try:
        ...     try:
        ...         raise Terminated("terminated by signal 15 (SIGTERM)")
        ...     except Terminated:
        ...         raise RuntimeError("DataLoader worker (pid 7) is killed by signal")
        ... except RuntimeError as error:
        ...     str(_stopped_by(error))
        'terminated by signal 15 (SIGTERM)'
    """
    seen = 0
    cause = exc.__context__ or exc.__cause__
    while cause is not None and seen < 20:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        cause, seen = cause.__context__ or cause.__cause__, seen + 1
    return None


class StopScript(BaseException):
    """Raised by a hook of torchdoctor's (``torchdoctor tune`` after its measured steps) to end
    the script at a step boundary; :func:`run_script` returns exit code 0 with ``stopped`` set.
    A BaseException, so the script's own ``except Exception`` blocks let it through.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.py"
        >>> _ = path.write_text("def step():\\n    pass\\nwhile True:\\n    step()\\n")
        >>> calls = []
        >>> def stop_after_two():
        ...     calls.append(1)
        ...     if len(calls) == 2:
        ...         raise StopScript
        >>> outcome = run_script(load_script(str(path), "step"), on_step_fn_end=stop_after_two)
        >>> outcome.exit_code, outcome.stopped, len(calls)
        (0, True, 2)
    """


class ScriptNotFoundError(ValueError):
    """The script path does not name a readable file.

    Example:
        >>> try:
        ...     load_script("no/such/train.py")
        ... except ScriptNotFoundError as error:
        ...     print(str(error).split(";")[0])
        script 'no/such/train.py' does not exist
    """


@dataclass
class LoadedScript:
    """A compiled script, ready for :func:`run_script`.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.py"
        >>> _ = path.write_text("import sys\\nsys.exit(len(sys.argv))\\n")
        >>> loaded = load_script(str(path))
        >>> loaded.step_fn, loaded.wrap_in_script, loaded.path == str(path.resolve())
        (None, False, True)
    """

    path: str
    code: types.CodeType
    step_fn: str | None = None
    #: True when ``step_fn`` names a function defined in the script itself
    wrap_in_script: bool = False
    #: the path as the user typed it: the script's ``sys.argv[0]``, as ``python PATH`` gives
    given: str | None = None
    #: run as ``python -m NAME`` (:func:`load_module`): the module's spec, else None
    spec: Any = None


@dataclass
class ScriptOutcome:
    """How the script ended: ``exit_code`` as Python would report it.

    Example:
        >>> ScriptOutcome(exit_code=0).interrupted
        False
    """

    exit_code: int
    exception: BaseException | None = None
    interrupted: bool = False  # Ctrl-C (KeyboardInterrupt)
    traceback_text: str | None = None
    stopped: bool = False  # ended by torchdoctor itself (StopScript), not by the script


def _qualnames(tree: ast.AST) -> dict[str, ast.AST]:
    found: dict[str, ast.AST] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    found.setdefault(name, child)
                    visit(child, name + ".<locals>.")
                else:
                    visit(child, name + ".")
            elif not isinstance(child, ast.Lambda):
                visit(child, prefix)

    visit(tree, "")
    return found


#: launchers that start a script in several processes (not scripts themselves)
_LAUNCHERS = frozenset({"torchrun", "torch.distributed.run", "accelerate", "deepspeed", "mpirun"})
_PYTHONS = frozenset({"python", "python3"})


def load_script(path: str, step_fn: str | None = None) -> LoadedScript:
    """Read and compile a script; ``SyntaxError`` and :class:`ScriptNotFoundError` on bad input.

    With ``step_fn`` naming a function defined in the script, the compiled code decorates it
    (innermost) with a hook that :func:`run_script` provides; an unknown name is a ValueError
    listing the functions the script defines.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.py"
        >>> _ = path.write_text("import sys\\nsys.exit(len(sys.argv))\\n")
        >>> type(load_script(str(path)).code).__name__
        'code'
    """
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        name = os.path.basename(path)  # (torchdoctor run -- torchrun ... / -- python ...)
        hint = ("; drop the interpreter: `torchdoctor run train.py`" if name in _PYTHONS
                else "; to profile every rank, put torchdoctor inside the launcher: `torchrun "
                "--nproc_per_node 2 -m torchdoctor run train.py`" if name in _LAUNCHERS else "")
        raise ScriptNotFoundError(
            f"script {path!r} {what}; expected the path of a Python file to run, as in "
            "`torchdoctor run train.py --epochs 1`" + hint
        )
    absolute = os.path.abspath(path)
    if is_notebook(absolute):  # its code cells, in order (collect/notebook.py)
        source = notebook_source(absolute)
    else:
        with tokenize.open(absolute) as handle:  # honours the script's encoding declaration
            source = handle.read()
    if step_fn is None or ":" in step_fn:
        code = compile(source, absolute, "exec", dont_inherit=True)
        return LoadedScript(absolute, code, step_fn, given=path)
    tree = ast.parse(source, absolute)
    functions = _qualnames(tree)
    target = functions.get(step_fn)
    if target is None:
        known = ", ".join(sorted(functions)) or "none"
        raise ValueError(
            f"--step-fn {step_fn!r}: {path} defines no function with that qualified name "
            f"(functions defined there: {known}); use NAME or Class.method for the script's "
            "own functions, or module:NAME for an importable module"
        )
    hook = ast.Name(id=_HOOK_NAME, ctx=ast.Load())
    ast.copy_location(hook, target)
    target.decorator_list.append(hook)  # last = applied first: wraps the plain function
    code = compile(tree, absolute, "exec", dont_inherit=True)
    return LoadedScript(absolute, code, step_fn, wrap_in_script=True, given=path)


def _step_wrapper(on_call_end: Callable[[], None]) -> Callable[[Callable], Callable]:
    depth = [0]

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def step_fn(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:  # a recursive call is part of the outer step
                    on_call_end()

        return step_fn

    return decorate


def _wrap_module_function(
    spec: str, decorate: Callable[[Callable], Callable]
) -> Callable[[], None]:
    module_name, _, qualname = spec.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"--step-fn {spec!r}: cannot import module {module_name!r} ({exc}); it must be "
            "importable from the script's directory or the installed packages"
        ) from exc
    parts = qualname.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
    original = getattr(owner, parts[-1], None) if owner is not None else None
    if not callable(original):
        raise ValueError(
            f"--step-fn {spec!r}: {module_name} has no function {qualname!r}; give "
            "module:function or module:Class.method"
        )
    raw = owner.__dict__.get(parts[-1], original) if isinstance(owner, type) else original
    if isinstance(raw, staticmethod | classmethod):
        setattr(owner, parts[-1], type(raw)(decorate(raw.__func__)))
    else:
        setattr(owner, parts[-1], decorate(original))
    return functools.partial(setattr, owner, parts[-1], raw)


def _user_traceback(exc: BaseException, path: str) -> types.TracebackType | None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != path:
        tb = tb.tb_next
    return tb or exc.__traceback__


#: torchdoctor's collection code: its frames (a hook, the sync audit's mode passing the user's
#: call on) are left out of the script's traceback, which then reads as it would without it
_OWN_FRAMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")


def _without_own_frames(te: traceback.TracebackException) -> None:
    seen: set[int] = set()
    while te is not None and id(te) not in seen:  # (chained exceptions too)
        seen.add(id(te))
        te.stack = traceback.StackSummary.from_list(
            [f for f in te.stack if not f.filename.startswith(_OWN_FRAMES)]
        )
        for chained in (te.__cause__, te.__context__):
            if chained is not None:
                _without_own_frames(chained)
        te = None


def _format(exc: BaseException, path: str) -> str:
    """The script's exception as Python prints it, from the script's first frame on, without
    torchdoctor's own frames.

    Example:
        >>> try:
        ...     int("x")
        ... except ValueError as error:
        ...     _format(error, "<doctest>").splitlines()[-1]
        "ValueError: invalid literal for int() with base 10: 'x'"
    """
    te = traceback.TracebackException(type(exc), exc, _user_traceback(exc, path))
    _without_own_frames(te)
    return "".join(te.format())


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # what Python does with sys.exit("message")
    return 1


def run_script(
    script: LoadedScript,
    argv: Sequence[str] = (),
    *,
    on_step_fn_end: Callable[[], None] | None = None,
) -> ScriptOutcome:
    """Execute the script as ``__main__``; never raises for what the script does.

    ``on_step_fn_end`` is called after each (outermost) call of the ``step_fn`` the script was
    loaded with.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.py"
        >>> _ = path.write_text("import sys\\nsys.exit(len(sys.argv))\\n")
        >>> outcome = run_script(load_script(str(path)), ["--epochs", "1"])
        >>> outcome.exit_code, outcome.exception is None
        (3, True)
    """
    main = types.ModuleType("__main__")
    spec = script.spec
    main.__dict__.update(
        {"__file__": script.path, "__builtins__": builtins, "__spec__": spec,
         "__loader__": getattr(spec, "loader", None), "__cached__": None,
         "__package__": getattr(spec, "parent", None)}
    )  # fmt: skip
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    saved_main = sys.modules.get("__main__")
    sys.argv = [script.given or script.path, *argv]
    # `python -m` puts the current directory first, `python PATH` the script's
    sys.path[0:1] = [os.getcwd() if spec is not None else os.path.dirname(script.path)]
    sys.modules["__main__"] = main
    restore: list[Callable[[], None]] = []
    try:
        if script.step_fn is not None:  # a bad --step-fn raises ValueError from here
            decorate = _step_wrapper(on_step_fn_end or (lambda: None))
            if script.wrap_in_script:
                main.__dict__[_HOOK_NAME] = decorate
            else:
                restore.append(_wrap_module_function(script.step_fn, decorate))
        if is_notebook(script.path):  # IPython's names a notebook uses without importing
            main.__dict__.update(notebook_globals())
        try:
            with sigterm_as_interrupt(), sigint_outside_collectors(), watching_options():
                exec(script.code, main.__dict__)
            return ScriptOutcome(0)
        except SystemExit as exc:
            code, stop = _exit_code(exc), _stopped_by(exc)
            if stop is None:
                return ScriptOutcome(code)
            # a framework's graceful shutdown on Ctrl-C (Lightning: "Detected
            # KeyboardInterrupt, attempting graceful shutdown", then exit(1)): interrupted
            said = (f"{str(stop) or 'interrupted (Ctrl-C)'}, and exited with code {code} "
                    "(its own shutdown)\n")  # fmt: skip
            sys.stderr.write(f"torchdoctor: the script was {said}")
            return ScriptOutcome(code, stop, True, said)
        except StopScript:  # torchdoctor stopped it on purpose: a clean end
            return ScriptOutcome(0, stopped=True)
        except Terminated as exc:  # SIGTERM: Python would die silently; say where it stopped
            where = traceback.extract_tb(exc.__traceback__)
            user = [f for f in where if f.filename == script.path]
            line = f" at {script.path}:{user[-1].lineno}" if user else ""
            text = f"{exc}{line}\n"
            sys.stderr.write(f"torchdoctor: the script was {text}")
            return ScriptOutcome(EXIT_SIGTERM, exc, True, text)
        except KeyboardInterrupt as exc:
            text = _format(exc, script.path)
            sys.stderr.write(text)
            return ScriptOutcome(EXIT_CTRL_C, exc, True, text)
        except BaseException as exc:  # the script's own error: report it as Python would
            text = _format(exc, script.path)
            sys.stderr.write(text)
            stop = _stopped_by(exc)  # ... unless raised while a signal was stopping it
            if stop is not None:  # (a DataLoader's "worker killed by signal" after SIGTERM)
                code = EXIT_SIGTERM if isinstance(stop, Terminated) else EXIT_CTRL_C
                first = str(stop) or "interrupted (Ctrl-C)"
                said = f"{first}; while it stopped: {type(exc).__name__}: {exc}\n"
                sys.stderr.write(f"torchdoctor: the script was {said}")
                return ScriptOutcome(code, exc, True, said)
            return ScriptOutcome(1, exc, False, text)
    finally:
        with contextlib.suppress(Exception):  # (nanoGPT's configurator: --name=value globals)
            note_settings(argv, main.__dict__)
        for undo in reversed(restore):
            undo()
        sys.argv, sys.path[:] = saved_argv, saved_path
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        sys.stdout.flush()
        sys.stderr.flush()
