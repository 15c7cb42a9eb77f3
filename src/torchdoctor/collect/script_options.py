"""The script's own command-line options, so advice can name the switch a user already has.

A third-party training script is run as it is: its user turns its knobs from the command line
(timm's ``--amp``, pytorch/examples' ``--workers``, a Hugging Face script's
``--dataloader_num_workers``, nanoGPT's ``--compile=True``), not by editing its code. Under
``torchdoctor run`` (:func:`watching_options`, around the script), every ``argparse`` parse that
returns is noted with the parser's options and the values it gave them (``HfArgumentParser``
and other subclasses included); after the script, ``--name=value`` arguments no parser took
that name one of the script's module-level settings (nanoGPT's ``configurator.py`` style) are
noted too; a Hydra job's composed config, a click command's options and the arguments of the
function ``fire.Fire`` called are read while they run (:func:`note_running_options`,
``collect/script_configs.py``; the argparse parsers of Hydra and fire themselves, of their own
flags, are not noted), and so are a yacs config's keys (``KEY VALUE`` after the flags) and absl's
parsed flags (``collect/script_yacs_absl.py``). The session keeps them as ``environment.script_options``; the advice
(``analyze/advice/script_terms.py``) names the one its fix turns.

Example:
    >>> import argparse
    >>> with watching_options():
    ...     parser = argparse.ArgumentParser()
    ...     _ = parser.add_argument("--workers", type=int, default=0)
    ...     _ = parser.add_argument("--amp", action="store_true")
    ...     _ = parser.parse_args(["--workers", "2"])
    ...     found = script_options()
    >>> [(o["flags"], o["value"], o["given"], o["switch"]) for o in found]
    [(['--workers'], 2, True, False), (['--amp'], False, False, True)]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torchdoctor.collect.script_configs import (
    cfgnode_options,
    click_options,
    fire_options,
    hydra_options,
    lightning_cli_options,
)
from torchdoctor.collect.script_yacs_absl import absl_options, yacs_options

__all__ = ["forget_options", "note_running_options", "note_settings", "script_options",
           "watching_options"]

#: options kept at most (a launcher's parser can define hundreds; advice needs a few)
MAX_OPTIONS = 400
_SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
             argparse.BooleanOptionalAction)  # fmt: skip
_SKIPPED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)

_NOTED: dict[str, dict[str, Any]] = {}  # dest -> its entry (the last parse wins)
_WATCHING: list[bool] = []
_LOOKED: list[bool] = []  # note_running_options has looked in this watch


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: numbers, text, booleans and None as they are, short
    lists of them; anything else by its type's name."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, (list, tuple)) and all(
        v is None or isinstance(v, (bool, int, float, str)) for v in value
    ):
        return [v if not isinstance(v, str) else v[:200] for v in value[:16]]
    return f"<{type(value).__name__}>"


def _given(flags: Sequence[str], argv: Sequence[str]) -> bool:
    """Whether any of ``flags`` appears in ``argv`` (``--flag``, ``--flag=VALUE``; a long
    option's unambiguous prefix is not followed)."""
    return any(isinstance(t, str) and t.startswith("-") and t.split("=", 1)[0] in flags
               for t in argv)  # fmt: skip


def _is_switch(action: argparse.Action) -> bool:
    """A flag given bare: ``store_true`` and its kin, and an optional value whose bare form
    sets a boolean (``HfArgumentParser``'s ``--bf16``: ``nargs="?", const=True``)."""
    return isinstance(action, _SWITCHES) or (action.nargs == "?" and isinstance(action.const, bool))


def _sets(action: argparse.Action) -> dict[str, Any]:
    """What giving a switch sets: ``{"sets": True}`` for ``store_true``, ``False`` for
    ``store_false``, the constant of ``store_const`` (or of a bare optional value);
    ``{"sets": "either"}`` for a ``BooleanOptionalAction`` (``--x`` / ``--no-x``); nothing for
    an option taking a value."""
    if isinstance(action, argparse.BooleanOptionalAction):
        return {"sets": "either"}
    if _is_switch(action):
        return {"sets": _plain(action.const)}
    return {}


#: packages whose own argparse parser reads their own flags (Hydra's ``--cfg``, ``--multirun``;
#: fire's ``--trace``, ``--interactive`` after ``--``): the script's options are elsewhere
_CLI_FRAMEWORKS = frozenset({"hydra", "fire"})


def _parsed_by_framework(frame: Any) -> bool:
    """Whether the first caller outside argparse, from ``frame`` outwards, is a module of
    :data:`_CLI_FRAMEWORKS`.

    Example:
        >>> import sys
        >>> _parsed_by_framework(sys._getframe())
        False
    """
    while frame is not None and frame.f_globals.get("__name__") == "argparse":
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return str(name).split(".", 1)[0] in _CLI_FRAMEWORKS


def _note_parse(parser: argparse.ArgumentParser, namespace: Any, args: Any) -> None:
    argv = list(args) if args is not None else sys.argv[1:]
    seen: set[str] = set()
    for action in parser._actions:
        if isinstance(action, _SKIPPED) or not action.option_strings or action.dest in seen:
            continue  # (a second option of a destination: HfArgumentParser's --no_x after --x)
        seen.add(action.dest)
        if len(_NOTED) >= MAX_OPTIONS and action.dest not in _NOTED:
            return
        flags = [flag for flag in action.option_strings if flag.startswith("--")] or list(
            action.option_strings
        )
        _NOTED[action.dest] = {
            "flags": flags[:4],
            "dest": action.dest,
            "value": _plain(getattr(namespace, action.dest, None)),
            "default": _plain(action.default),
            "given": _given(action.option_strings, argv),
            "switch": _is_switch(action),
            **_sets(action),
            **({"nargs": action.nargs} if action.nargs == "?" else {}),  # (a value optional)
            **({"choices": [_plain(c) for c in list(action.choices)[:16]]}
               if action.choices and not isinstance(action.choices, Mapping) else {}),
        }  # fmt: skip


def note_settings(argv: Sequence[str], settings: Mapping[str, Any]) -> None:
    """Note the ``--name=value`` arguments of ``argv`` that no parser took and that name one
    of ``settings`` (the script's module globals) holding a plain value: a script that reads
    its options as nanoGPT's ``configurator.py`` does, overriding globals. A script that lists
    its settings in ``config_keys`` (nanoGPT's convention) has every one of them noted, given
    or not (its ``eval_interval`` is the switch for an evaluation it runs by default). A
    minGPT ``CfgNode`` among them has its keys noted (``--trainer.num_workers=...``:
    ``script_configs.cfgnode_options``).

    Example:
        >>> with watching_options():
        ...     note_settings(["--compile=False", "--out=x"], {"compile": False, "n": 1})
        ...     [(o["flags"], o["value"], o["given"]) for o in script_options()]
        [(['--compile'], False, True)]
        >>> with watching_options():
        ...     note_settings([], {"config_keys": ["eval_iters"], "eval_iters": 200, "t": 0.5})
        ...     [(o["flags"], o["value"], o["given"]) for o in script_options()]
        [(['--eval_iters'], 200, False)]
    """
    given = dict.fromkeys(token[2:].split("=", 1)[0] for token in argv
                          if isinstance(token, str) and token.startswith("--") and "=" in token)
    keys = settings.get("config_keys")
    listed = [k for k in keys if isinstance(k, str)] if isinstance(keys, (list, tuple)) else []
    for name in [*given, *listed]:
        value = settings.get(name)
        if name in _NOTED or not name.isidentifier() or isinstance(value, type(None)):
            continue
        if not isinstance(value, (bool, int, float, str)) or len(_NOTED) >= MAX_OPTIONS:
            continue
        _NOTED[name] = {"flags": [f"--{name}"], "dest": name, "value": _plain(value),
                        "default": None, "given": name in given,
                        "switch": isinstance(value, bool), "form": "--name=value"}  # fmt: skip
    # (minGPT's CfgNode: --trainer.x=...; a yacs config among the globals; absl's parsed
    # flags, which app.run leaves parsed after the script's main)
    for entry in [*cfgnode_options(list(argv), settings), *yacs_options(settings=settings),
                  *absl_options()]:  # fmt: skip
        if len(_NOTED) >= MAX_OPTIONS:
            break
        _NOTED.setdefault(entry["dest"], entry)


def note_running_options() -> None:
    """Note the options of a Hydra job, click command, fire-called function, LightningCLI or
    yacs config running now (``collect/script_configs.py``, ``collect/script_yacs_absl.py``:
    none can be read after the script), and absl's parsed flags, once per
    watched script: the profiler calls it from its detailed steps until one finds them (the
    steps run inside the job or command). Outside a watched script it does nothing.

    Example:
        >>> with watching_options():
        ...     note_running_options()  # (no Hydra job and no click command here)
        ...     script_options()
        []
    """
    if not _WATCHING or _LOOKED:
        return
    try:
        found = [*hydra_options(), *click_options(), *fire_options(),
                 *lightning_cli_options(), *yacs_options(), *absl_options()]  # fmt: skip
    except Exception:  # (never the script's problem; and not looked for again)
        _LOOKED.append(True)
        return
    if not found:  # (not yet inside the job or command: the next detailed step looks again)
        return
    _LOOKED.append(True)
    for entry in found:
        if len(_NOTED) >= MAX_OPTIONS:
            return
        _NOTED.setdefault(entry["dest"], entry)


def script_options() -> list[dict[str, Any]]:
    """The options noted so far (see the module docstring), in the order they were defined.

    Example:
        >>> with watching_options():
        ...     script_options()
        []
    """
    return [dict(entry) for entry in _NOTED.values()]


def forget_options() -> None:
    """Forget the options noted by an earlier run in this process, unless a script is being
    watched now (a profiler started inside it keeps its options).

    Example:
        >>> forget_options(); script_options()
        []
    """
    if not _WATCHING:
        _NOTED.clear()


@contextlib.contextmanager
def watching_options() -> Iterator[None]:
    """Note every argparse parse made inside the block (earlier notes are forgotten at its
    start; what it noted stays readable after it, for the session).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser()
        >>> _ = parser.add_argument("--compile", action="store_true")
        >>> with watching_options():
        ...     _ = parser.parse_args(["--compile"])
        >>> [(o["flags"], o["value"], o["given"]) for o in script_options()]
        [(['--compile'], True, True)]
    """
    if _WATCHING:  # (nested: the outer watch notes already)
        yield
        return
    _NOTED.clear()
    _LOOKED.clear()
    original = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self: argparse.ArgumentParser, args: Any = None,
                         namespace: Any = None) -> Any:  # fmt: skip
        result = original(self, args, namespace)
        try:
            if not _parsed_by_framework(sys._getframe(1)):
                _note_parse(self, result[0], args)
        except Exception:  # (never the script's problem)
            pass
        return result

    argparse.ArgumentParser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    _WATCHING.append(True)
    try:
        yield
    finally:
        _WATCHING.pop()
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
