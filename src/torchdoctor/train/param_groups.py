"""Optimizer parameter groups by module-name prefix (seed 004: head 3e-3, backbone 1e-5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def _matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def param_groups(
    model: nn.Module,
    settings: Mapping[str, float | Mapping[str, Any]],
    default: float | Mapping[str, Any] | None = None,
    *,
    trainable_only: bool = True,
) -> list[dict[str, Any]]:
    """Split ``model``'s parameters into optimizer groups by module-name prefix.

    ``settings`` maps a prefix (``"head"``, ``"backbone.layer4"``) to a learning rate or to a
    dict of group options (``{"lr": 3e-3, "weight_decay": 5e-4}``). Each parameter goes to the
    longest matching prefix; the others form a last group with ``default`` (or the optimizer's
    defaults when ``default`` is None). Each group has a ``"name"`` key (its prefix, or
    ``"default"``); optimizers ignore unknown keys. Frozen parameters are skipped unless
    ``trainable_only=False``. A prefix that matches nothing is an error (a typo would otherwise
    silently train that part at the default rate).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential()
        >>> model.add_module("backbone", torch.nn.Linear(4, 4))
        >>> model.add_module("head", torch.nn.Linear(4, 2))
        >>> groups = param_groups(model, {"head": 3e-3, "backbone": 1e-5})
        >>> [(g["name"], g["lr"], len(g["params"])) for g in groups]
        [('head', 0.003, 2), ('backbone', 1e-05, 2)]
        >>> optimizer = torch.optim.AdamW(groups)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"param_groups expects an nn.Module, got {type(model).__name__}")
    options: dict[str, dict[str, Any]] = {}
    for prefix, value in settings.items():
        options[prefix] = dict(value) if isinstance(value, Mapping) else {"lr": float(value)}
    default_options: dict[str, Any] = {}
    if default is not None:
        default_options = dict(default) if isinstance(default, Mapping) else {"lr": float(default)}

    by_prefix: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in options}
    rest: list[nn.Parameter] = []
    longest_first = sorted(options, key=len, reverse=True)
    for name, parameter in model.named_parameters():
        if trainable_only and not parameter.requires_grad:
            continue
        owner = next((p for p in longest_first if _matches(name, p)), None)
        (rest if owner is None else by_prefix[owner]).append(parameter)

    empty = [prefix for prefix, params in by_prefix.items() if not params]
    if empty:
        children = ", ".join(name for name, _ in model.named_children()) or "(none)"
        raise ValueError(
            f"no trainable parameter under prefix {empty}; the model's top-level modules are: "
            f"{children}. Use module names as printed by model.named_modules()"
        )
    groups = [
        {"params": params, "name": prefix, **options[prefix]}
        for prefix, params in by_prefix.items()
    ]
    if rest:
        groups.append({"params": rest, "name": "default", **default_options})
    return groups
