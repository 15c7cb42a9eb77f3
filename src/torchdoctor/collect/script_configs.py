"""The options of scripts that do not parse with argparse: Hydra's composed config, click, fire,
LightningCLI, minGPT's CfgNode.

``collect/script_options.py`` notes argparse parses and nanoGPT-style globals. Two other ways a
training script takes its knobs are common enough to matter: Hydra (``@hydra.main``: the user
writes ``data.num_workers=4 trainer.precision=bf16-mixed`` on the command line, the
lightning-hydra-template and many research repositories) and click (``@click.command``, typer
too). Neither is visible after the script: Hydra resets its ``HydraConfig`` when the task
function returns and click's context lives only while the command runs. So
:func:`note_running_options` reads them *inside* the run, once, from the profiler's first
detailed step (the script's training loop runs inside the task function or command):

- Hydra: the job's overrides (``HydraConfig.get().overrides.task``) and the composed config
  Hydra saved for the job (``<output_dir>/.hydra/config.yaml``; without it, the overrides
  alone), flattened to dotted keys. Each leaf of plain value is an option of form
  ``key=value`` (``data.num_workers``: 0). A Lightning ``Trainer`` node with no ``precision``
  key gets an absent ``<node>.precision`` option (its override is ``+trainer.precision=...``),
  a torch optimizer node (``_target_: torch.optim.Adam``) with no ``fused`` key an absent
  ``<node>.fused`` switch (``+model.optimizer.fused=true``).
- click (and typer, which carries its own copy of click): every option of the running
  command and of its parents, with its value, whether the command line gave it, and what a
  flag sets (``--amp/--no-amp``: either).
- fire (``fire.Fire(train)``: alpaca-lora's ``--micro_batch_size``): the arguments of the
  function fire called, found on the stack (the frame fire's ``core.py`` called), with their
  values now; ``--name`` on the command line marks one given; a boolean is a switch
  (``--name`` / ``--noname``).
- LightningCLI (jsonargparse, whose parser never calls argparse's ``parse_known_args``:
  ``fit --config cfg.yaml --trainer.precision bf16-mixed``): the parsed config of the
  ``LightningCLI`` found on the stack (its ``__init__`` runs the subcommand; ``run=False``
  scripts keep it in a local while they fit), flattened to ``--trainer.max_epochs``-style
  options (:func:`lightning_cli_options`).
- minGPT's ``CfgNode`` (``config.merge_from_args(sys.argv[1:])`` in projects/chargpt and adder:
  ``--trainer.num_workers=0 --model.n_layer=4``): read after the script from its globals
  (:func:`cfgnode_options`), every leaf of plain value, as a ``--dotted.key=value`` option.

Example:
    >>> flat = _flatten({"data": {"num_workers": 0, "_target_": "x.DM"}, "seed": None,
    ...                  "trainer": {"_target_": "lightning.pytorch.Trainer", "max_epochs": 2}})
    >>> [(o["dest"], o["value"], o.get("absent", False)) for o in _hydra_entries(flat, set())]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('data.num_workers', 0, False), ('seed', None, False), ('trainer.precision', None, True),
     ('trainer.max_epochs', 2, False)]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["cfgnode_options", "click_options", "fire_options", "hydra_options",
           "lightning_cli_options"]

#: leaves of a composed config kept at most (a large config has thousands)
MAX_KEYS = 400
#: Lightning's Trainer, as a Hydra ``_target_`` names it
_TRAINERS = ("lightning.pytorch.trainer.Trainer", "lightning.pytorch.Trainer", "lightning.Trainer",
             "pytorch_lightning.Trainer", "pytorch_lightning.trainer.Trainer")  # fmt: skip


#: torch optimizers with a ``fused`` argument, as a Hydra ``_target_`` names them (the
#: lightning-hydra-template's ``model.optimizer``: ``+model.optimizer.fused=true`` adds it)
_FUSED_OPTIMIZERS = frozenset(f"torch.optim.{name}" for name in ("Adam", "AdamW", "SGD", "Adagrad"))

#: the modules whose ``get_current_context`` gives a running click command's context: click
#: and the copy of it typer (>= 0.16) carries as ``typer._click``
_CLICKS = ("click.globals", "typer._click.globals")


#: a command's options that are its framework's, not the script's (typer's shell completion)
_FRAMEWORK_OPTIONS = frozenset({"install_completion", "show_completion", "help", "version"})


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """The leaves of a nested mapping as ``(dotted key, value)``; ``_target_``-style keys
    (leading underscore) are kept for the caller to read and skipped as options."""
    if not isinstance(node, Mapping):
        return
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield f"{dotted}._node_", value
            yield from _flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def _plain_leaf(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith("${") and len(value) <= 200  # (an interpolation: no value)
    return value is None or isinstance(value, (bool, int, float))


def _hydra_entries(flat: Iterator[tuple[str, Any]], given: set[str]) -> list[dict[str, Any]]:
    """Option entries of the flattened config ``flat`` (``given``: the keys the command line
    overrode)."""
    entries: list[dict[str, Any]] = []
    for key, value in flat:
        if len(entries) >= MAX_KEYS:
            break
        if key.endswith("._node_"):
            node = key[: -len("._node_")]
            if value.get("_target_") in _TRAINERS and "precision" not in value:
                entries.append({"flags": [f"{node}.precision"], "dest": f"{node}.precision",
                                "value": None, "default": None, "given": False,
                                "switch": False, "form": "key=value", "absent": True})  # fmt: skip
            if value.get("_target_") in _FUSED_OPTIMIZERS and "fused" not in value:
                entries.append({"flags": [f"{node}.fused"], "dest": f"{node}.fused",
                                "value": None, "default": None, "given": False,
                                "switch": True, "form": "key=value", "absent": True})  # fmt: skip
            continue
        if key.rsplit(".", 1)[-1].startswith("_") or not _plain_leaf(value):
            continue
        entries.append({"flags": [key], "dest": key, "value": value, "default": None,
                        "given": key in given, "switch": isinstance(value, bool),
                        "form": "key=value"})  # fmt: skip
    return entries


def _override_value(text: str) -> Any:
    """An override's value as YAML would read it (``true`` -> True, ``4`` -> 4)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip().strip("'\"")


def hydra_options() -> list[dict[str, Any]]:
    """The running Hydra job's options (see the module docstring); empty outside a job.

    Example:
        >>> hydra_options()  # (no Hydra job runs here)
        []
    """
    module = sys.modules.get("hydra.core.hydra_config")
    if module is None or not module.HydraConfig.initialized():
        return []
    hydra = module.HydraConfig.get()
    overrides = [str(o) for o in (hydra.overrides.task or ())]
    given: dict[str, Any] = {}
    for override in overrides:
        key, _, value = override.partition("=")
        given[key.lstrip("+~")] = _override_value(value)
    composed: Any = None
    subdir = hydra.output_subdir
    if subdir is not None:
        path = os.path.join(str(hydra.runtime.output_dir), str(subdir), "config.yaml")
        if os.path.isfile(path):
            from omegaconf import OmegaConf  # (Hydra's own; imported with it)

            composed = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if composed is None:  # (no saved config: the command line's keys alone)
        composed = {}
        for key, value in given.items():
            node = composed
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            if isinstance(node, dict):
                node[last] = value
    return _hydra_entries(_flatten(composed), set(given))


def _click_entry(param: Any, ctx: Any, source_of: Any) -> dict[str, Any] | None:
    opts = [o for o in [*param.opts, *param.secondary_opts] if isinstance(o, str)]
    flags = [o for o in opts if o.startswith("--")] or opts
    if not flags or param.name is None or param.name in _FRAMEWORK_OPTIONS:
        return None
    value = ctx.params.get(param.name)
    entry: dict[str, Any] = {"flags": flags[:4], "dest": param.name,
                             "value": value if _plain_leaf(value) else f"<{type(value).__name__}>",
                             "default": None, "given": source_of(param.name),
                             "switch": bool(param.is_flag)}  # fmt: skip
    if param.is_flag:
        flag_value = getattr(param, "flag_value", True)
        entry["sets"] = "either" if param.secondary_opts else (
            flag_value if isinstance(flag_value, bool) else True)
    choices = getattr(getattr(param, "type", None), "choices", None)  # (typer's: no type)
    if choices:
        entry["choices"] = [str(c) for c in list(choices)[:16]]
    return entry


def click_options() -> list[dict[str, Any]]:
    """The running click command's options and its parents' (see the module docstring);
    empty outside one.

    Example:
        >>> click_options()  # (no click command runs here)
        []
    """
    entries: list[dict[str, Any]] = []
    for name in _CLICKS:  # (click, and typer's own copy of it)
        module = sys.modules.get(name)
        ctx = module.get_current_context(silent=True) if module is not None else None
        while ctx is not None:
            def source_of(name: str, ctx: Any = ctx) -> bool:
                source = ctx.get_parameter_source(name)
                return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")

            for param in getattr(ctx.command, "params", ()):
                if getattr(param, "param_type_name", None) == "option" and (
                    entry := _click_entry(param, ctx, source_of)
                ):
                    entries.append(entry)
            ctx = ctx.parent
    return entries


def _fire_entry(name: str, value: Any, argv: list[str]) -> dict[str, Any]:
    dashed = name.replace("_", "-")
    given = any(t.split("=", 1)[0] in (f"--{name}", f"--{dashed}", f"--no{name}") for t in argv)
    entry: dict[str, Any] = {"flags": [f"--{name}"], "dest": name,
                             "value": value if _plain_leaf(value) else f"<{type(value).__name__}>",
                             "default": None, "given": given, "switch": isinstance(value, bool),
                             "form": "fire"}  # fmt: skip
    if isinstance(value, bool):
        entry["flags"].append(f"--no{name}")
        entry["sets"] = "either"
    return entry


def fire_options(frame: Any = None) -> list[dict[str, Any]]:
    """The arguments of the function ``fire.Fire`` called, from ``frame`` (default: the
    caller's) outwards (see the module docstring); empty when fire called none on the stack.

    Example:
        >>> fire_options()  # (fire runs no function here)
        []
    """
    core = sys.modules.get("fire.core")
    if core is None:
        return []
    fire_file = getattr(core, "__file__", None)
    frame = frame or sys._getframe(1)
    while frame is not None and frame.f_back is not None:
        if frame.f_back.f_code.co_filename == fire_file and frame.f_code.co_filename != fire_file:
            code = frame.f_code
            names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
            argv = [t for t in sys.argv[1:] if isinstance(t, str)]
            local = frame.f_locals
            return [_fire_entry(n, local.get(n), argv) for n in names if n != "self"][:MAX_KEYS]
        frame = frame.f_back
    return []


def _given_keys(argv: list[str]) -> set[str]:
    """The option names ``argv`` gives in long form (``--trainer.x=1`` and ``--trainer.x 1``:
    ``trainer.x``).

    Example:
        >>> sorted(_given_keys(["--a.b=1", "--c", "2", "-d"]))
        ['a.b', 'c']
    """
    return {t[2:].split("=", 1)[0] for t in argv if isinstance(t, str) and t.startswith("--")}


def cfgnode_options(argv: list[str], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The options of a minGPT-style config among ``settings`` (the script's globals): an object
    whose class has ``merge_from_args`` and ``to_dict`` (minGPT's ``CfgNode``, which reads
    ``--trainer.batch_size=32`` from the command line); its leaves of plain value, with the
    largest such config's keys when there are several. ``argv``: the script's arguments.

    Example:
        >>> class CfgNode:
        ...     def __init__(self, **kw): self.__dict__.update(kw)
        ...     def to_dict(self): return {k: v.to_dict() if isinstance(v, CfgNode) else v
        ...                                for k, v in self.__dict__.items()}
        ...     def merge_from_args(self, args): pass
        >>> config = CfgNode(trainer=CfgNode(num_workers=4, betas=(0.9, 0.95)), seed=3)
        >>> [(o["flags"], o["value"], o["given"]) for o in cfgnode_options(
        ...     ["--seed=1"], {"config": config, "n": 2})]
        [(['--trainer.num_workers'], 4, False), (['--seed'], 3, True)]
    """
    found: list[dict[str, Any]] = []
    given = _given_keys(argv)
    for value in list(settings.values()):
        kind = type(value)
        if not (callable(getattr(kind, "merge_from_args", None))
                and callable(getattr(kind, "to_dict", None))):  # fmt: skip
            continue
        tree = value.to_dict()
        entries = [{"flags": [f"--{key}"], "dest": key, "value": leaf, "default": None,
                    "given": key in given, "switch": isinstance(leaf, bool),
                    "form": "--name=value"}  # fmt: skip
                   for key, leaf in _flatten(tree)
                   if not key.endswith("._node_") and _plain_leaf(leaf) and leaf is not None]
        if len(entries) > len(found):
            found = entries[:MAX_KEYS]
    return found


def _is_lightning_cli(value: Any) -> bool:
    return any(c.__name__ == "LightningCLI" for c in getattr(type(value), "__mro__", ()))


def lightning_cli_options(frame: Any = None) -> list[dict[str, Any]]:
    """The options of the ``LightningCLI`` found in a local of ``frame`` (default: the
    caller's) or of its callers (see the module docstring); empty when there is none. A bool
    is told as ``--key=true``; any other value as ``--key value``.

    Example:
        >>> class LightningCLI:
        ...     subcommand = None
        ...     class config:
        ...         as_dict = staticmethod(lambda: {"trainer": {"precision": None,
        ...                                         "benchmark": False}, "config": ["c.yaml"]})
        >>> def fit(cli):
        ...     return lightning_cli_options()
        >>> [(o["flags"], o["value"], o.get("form")) for o in fit(LightningCLI())]
        [(['--trainer.precision'], None, None), (['--trainer.benchmark'], False, '--name=value')]
    """
    frame = frame or sys._getframe(1)
    while frame is not None:
        cli = next((v for v in frame.f_locals.values() if _is_lightning_cli(v)), None)
        if cli is not None:
            break
        frame = frame.f_back
    else:
        return []
    config = cli.config
    if getattr(cli, "subcommand", None) and hasattr(config, "get"):
        config = config.get(str(cli.subcommand), config)  # (fit --trainer...: its own part)
    given = _given_keys(sys.argv[1:])
    entries = []
    for key, leaf in _flatten(config.as_dict()):
        if key.endswith("._node_") or not _plain_leaf(leaf) or len(entries) >= MAX_KEYS:
            continue
        entry = {"flags": [f"--{key}"], "dest": key, "value": leaf, "default": None,
                 "given": key in given, "switch": isinstance(leaf, bool)}  # fmt: skip
        if isinstance(leaf, bool):  # (jsonargparse: --trainer.benchmark=true)
            entry["form"] = "--name=value"
        entries.append(entry)
    return entries
