"""The options of scripts configured through yacs or absl flags.

Two more ways a training script takes its knobs (beside those of ``collect/script_configs.py``):

- yacs (``cfg.merge_from_file(args.config_file); cfg.merge_from_list(args.opts)``: Detectron-style,
  person re-id, SlowFast and HRNet ``train.py`` scripts, whose user writes ``KEY VALUE`` pairs
  after the flags: ``... --config-file x.yaml DATALOADER.NUM_WORKERS 4``). The config is a
  ``yacs.config.CfgNode`` (fvcore's and detectron2's subclass it), most often a local of the
  script's ``main`` (deep-person-reid's ``cfg = get_default_config()``), so
  :func:`yacs_options` looks for it on the stack while the run goes (the locals of each frame,
  the attributes of a ``self`` there, the globals of ``__main__``), and in the script's globals
  after it. Each leaf of plain value is an option of form ``yacs``; one the command line gave
  (a token equal to its key) is marked given.
- absl (``flags.DEFINE_integer("num_workers", 4, ...)``, ``app.run(main)``: ``--num_workers=4``,
  a boolean ``--amp`` / ``--noamp``): :func:`absl_options` reads the parsed ``absl.flags.FLAGS``,
  the flags defined by the script and its own modules (not absl's ``--verbosity`` nor an
  installed library's), with whether the command line gave each. A flag holding an
  ``ml_collections`` config (``config_flags``: ``--config.training.batch_size=8``) has its leaves.

Example:
    >>> from yacs.config import CfgNode
    >>> cfg = CfgNode({"DATALOADER": {"NUM_WORKERS": 0}, "SOLVER": {"AMP": False, "STEPS": (1, 2)}})
    >>> [(o["flags"], o["value"], o["given"]) for o in yacs_node_options(
    ...     cfg, ["--config-file", "x.yaml", "SOLVER.AMP", "True"])]
    [(['DATALOADER.NUM_WORKERS'], 0, False), (['SOLVER.AMP'], False, True)]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from torchdoctor.collect.script_configs import MAX_KEYS, _flatten, _plain_leaf

__all__ = ["absl_options", "yacs_node_options", "yacs_options"]


def _is_yacs(value: Any) -> bool:
    """Whether ``value`` is a yacs ``CfgNode`` (or a subclass's: fvcore, detectron2)."""
    return isinstance(value, dict) and any(
        c.__name__ == "CfgNode" and c.__module__ == "yacs.config" for c in type(value).__mro__
    )


def yacs_node_options(node: Mapping[str, Any], argv: list[str]) -> list[dict[str, Any]]:
    """The options of the yacs config ``node`` (see the module docstring); ``argv``: the
    script's arguments.

    Example:
        >>> yacs_node_options({"train": {"batch_size": 32}}, ["train.batch_size", "64"])[0]["given"]
        True
    """
    given = {t for t in argv if isinstance(t, str)}
    entries: list[dict[str, Any]] = []
    for key, leaf in _flatten(node):
        if key.endswith("._node_") or not _plain_leaf(leaf) or leaf is None:
            continue
        entries.append({"flags": [key], "dest": key, "value": leaf, "default": None,
                        "given": key in given, "switch": isinstance(leaf, bool),
                        "form": "yacs"})  # fmt: skip
        if len(entries) >= MAX_KEYS:
            break
    return entries


def _candidates(frame: Any) -> list[Any]:
    """The values a yacs config may be held in, on the stack from ``frame`` outwards."""
    values: list[Any] = []
    while frame is not None:
        local = frame.f_locals
        values.extend(local.values())
        owner = local.get("self")
        if owner is not None and isinstance(getattr(owner, "__dict__", None), dict):
            values.extend(vars(owner).values())  # (a trainer's self.cfg)
        if frame.f_globals.get("__name__") == "__main__":
            values.extend(frame.f_globals.values())
        frame = frame.f_back
    return values


def yacs_options(frame: Any = None, settings: Mapping[str, Any] | None = None) -> list[dict]:
    """The options of the largest yacs config found on the stack from ``frame`` (default: the
    caller's) outwards, or among ``settings`` (the script's globals, after it) when given;
    empty when yacs is not imported or none is found.

    Example:
        >>> from yacs.config import CfgNode
        >>> def main():
        ...     cfg = CfgNode({"data": {"workers": 4}})
        ...     return yacs_options()
        >>> [(o["flags"], o["value"]) for o in main()]
        [(['data.workers'], 4)]
    """
    if "yacs.config" not in sys.modules:
        return []
    if settings is not None:
        values = list(settings.values())
    else:
        values = _candidates(frame or sys._getframe(1))
    nodes = [v for v in values if _is_yacs(v)]
    if not nodes:
        return []
    argv = [t for t in sys.argv[1:] if isinstance(t, str)]
    return max((yacs_node_options(n, argv) for n in nodes), key=len)


def _own_module(name: str) -> bool:
    """Whether the module that defined a flag is the script's or its project's (not absl's own,
    not an installed library's)."""
    if name.split(".", 1)[0] == "absl":
        return False
    module = sys.modules.get(name)
    path = str(getattr(module, "__file__", "") or "")
    return not any(part in path.split(os.sep) for part in ("site-packages", "dist-packages"))


def _absl_entry(flag: Any, argv: list[str]) -> list[dict[str, Any]]:
    name, value = flag.name, flag.value
    given = bool(getattr(flag, "present", 0))
    if callable(getattr(value, "to_dict", None)):  # (ml_collections: --config.a.b=v)
        return [{"flags": [f"--{name}.{key}"], "dest": f"{name}.{key}", "value": leaf,
                 "default": None, "given": any(t.startswith(f"--{name}.{key}=") for t in argv),
                 "switch": isinstance(leaf, bool), "form": "--name=value"}  # fmt: skip
                for key, leaf in _flatten(value.to_dict())
                if not key.endswith("._node_") and _plain_leaf(leaf) and leaf is not None]
    entry: dict[str, Any] = {"flags": [f"--{name}"], "dest": name,
                             "value": value if _plain_leaf(value) else f"<{type(value).__name__}>",
                             "default": flag.default if _plain_leaf(flag.default) else None,
                             "given": given, "switch": bool(getattr(flag, "boolean", False)),
                             "form": "--name=value"}  # fmt: skip
    if entry["switch"]:  # (--amp / --noamp)
        entry["flags"].append(f"--no{name}")
        entry["sets"] = "either"
        del entry["form"]
    choices = getattr(getattr(flag, "parser", None), "enum_values", None)
    if choices:
        entry["choices"] = [str(c) for c in list(choices)[:16]]
    return [entry]


def absl_options() -> list[dict[str, Any]]:
    """The parsed absl flags the script defined (see the module docstring); empty when absl's
    flags are not imported or not parsed.

    Example:
        >>> absl_options()  # (no absl flags parsed here)
        []
    """
    module = sys.modules.get("absl.flags")
    flags = getattr(module, "FLAGS", None)
    if flags is None or not flags.is_parsed():
        return []
    argv = [t for t in sys.argv[1:] if isinstance(t, str)]
    entries: list[dict[str, Any]] = []
    for name, defined in flags.flags_by_module_dict().items():
        if not _own_module(str(name)):
            continue
        for flag in defined:
            entries.extend(_absl_entry(flag, argv))
    return entries[:MAX_KEYS]
