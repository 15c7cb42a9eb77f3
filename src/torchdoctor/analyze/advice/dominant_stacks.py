"""Stacks of layers for the ``dominant-module`` rule: same-type children numbered one after
the other (a transformer's blocks, a ResNet's stages) are one part of the step, advised once.

Example:
    >>> layer = lambda i: {"path": f"h.{i}", "kind": "module", "type": "Block",
    ...                    "total_ms": {"mean": 2.0}}
    >>> repeated_group({"children": [layer(i) for i in range(4)]})[1]
    'h[0-3]'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import center, node_ms

MIN_REPEATS = 4
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def label(node: Mapping[str, Any]) -> str:
    """A node's label: its path, else its name.

    Example:
        >>> label({"path": "transformer.h.0", "name": "0"}), label({"name": "loss"})
        ('transformer.h.0', 'loss')
    """
    return str(node.get("path") or node.get("name") or "?")


def repeated_group(
    node: Mapping[str, Any], minimum: int = MIN_REPEATS
) -> tuple[list[Mapping], str] | None:
    """The largest group of >= ``minimum`` module children of one type and one structure
    (:func:`signature`), numbered one after the other, and a label for it.

    Example:
        >>> layer = lambda i: {"path": f"enc.layers.{i}", "kind": "module", "type": "Layer"}
        >>> group, name = repeated_group({"children": [layer(i) for i in range(6)]})
        >>> len(group), name
        (6, 'enc.layers[0-5]')
        >>> repeated_group({"children": [layer(i) for i in (0, 2, 5, 7)]}) is None
        True
    """
    groups: dict[Any, list[Mapping]] = {}
    children = list(node.get("children") or ())
    for child in children + block_rows(children):
        if child.get("kind") == "module" and child.get("type"):
            groups.setdefault(signature(child), []).append(child)
    stacks = [g for g in groups.values() if numbered_run(g) and same_size(g) and same_params(g)]
    best = max(stacks, key=lambda g: sum(node_ms(c) for c in g), default=[])
    if len(best) < minimum:
        return None
    if len(best) < MIN_REPEATS and not all(c.get("children") for c in best):
        # two or three leaf layers of one type (MNIST's conv1 and conv2: 1 -> 32 and
        # 32 -> 64 channels) are no stack of identical layers unless they save the same
        sizes = [c.get("activation_bytes") for c in best]
        if not all(isinstance(v, (int, float)) and v > 0 for v in sizes) or not same_size(best):
            return None
    first, last = label(best[0]), label(best[-1])
    prefix = first.rsplit(".", 1)[0] if "." in first else ""
    first_idx, last_idx = first.rsplit(".", 1)[-1], last.rsplit(".", 1)[-1]
    if prefix or (first.isdigit() and last.isdigit()):  # (an nn.Sequential model's own
        name = f"{prefix}[{first_idx}-{last_idx}]"  # items: "[0-3]", its name put before)
    else:
        name = f"{first}..{last}"
    return best, name


_BLOCK_ITEM = re.compile(r"^(.*)\.(\d+)\.(\d+)$")


def block_rows(children: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Children named ``stem.{i}.{j}`` grouped into one node per block ``stem.{i}``, in order:
    a ModuleList of ModuleLists (lucidrains' ``for attn, ff in self.layers``) never calls its
    blocks, so they have no node and their parts alternate among the parent's children
    (FT-Transformer's ``layers.0.0``, ``layers.0.1``, ``layers.1.0`` ...: no stack was seen).
    Each made node sums its parts' times, parameters and saved bytes (``"block": True``).

    Example:
        >>> part = lambda i, j, t: {"path": f"layers.{i}.{j}", "kind": "module", "type": t,
        ...                         "total_ms": {"mean": 1.0}, "children": []}
        >>> rows = block_rows([part(i, j, t) for i in range(2)
        ...                    for j, t in enumerate(("Attention", "FeedForward"))])
        >>> [(r["path"], r["type"], r["total_ms"]) for r in rows]
        [('layers.0', 'Attention + FeedForward', {'mean': 2.0}), ('layers.1', 'Attention + FeedForward', {'mean': 2.0})]
    """
    blocks: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for child in children:
        match = _BLOCK_ITEM.match(label(child)) if child.get("kind") == "module" else None
        if match is not None:
            blocks.setdefault((match.group(1), int(match.group(2))), []).append(child)
    rows = []
    for (stem, index), parts in blocks.items():
        if len(parts) < 2:
            continue

        def total(key: str, parts: list = parts) -> dict[str, float]:
            return {"mean": sum(center(p.get(key)) for p in parts)}

        row: dict[str, Any] = {
            "path": f"{stem}.{index}", "name": f"{stem}.{index}", "kind": "module",
            "type": " + ".join(str(p.get("type")) for p in parts), "block": True,
            "total_ms": {"mean": sum(node_ms(p) for p in parts)},
            "forward_ms": total("forward_ms"), "backward_ms": total("backward_ms"),
            "children": list(parts),
        }  # fmt: skip
        for key in ("params", "activation_bytes"):
            values = [p.get(key) for p in parts]
            if all(isinstance(v, (int, float)) for v in values):
                row[key] = sum(values)  # type: ignore[arg-type]
        rows.append(row)
    return rows


def signature(node: Mapping[str, Any], depth: int = 0) -> Any:
    """A module's type and, recursively, its module children's: identical layers (a
    transformer's blocks) share it; a ResNet's stages do not (only the later ones downsample),
    so they are no stack of identical layers to "compile, or use fewer of".

    Example:
        >>> block = lambda *kids: {"type": "Sequential", "kind": "module", "children": [
        ...     {"type": t, "kind": "module", "children": []} for t in kids]}
        >>> signature(block("Conv2d", "ReLU")) == signature(block("Conv2d", "ReLU"))
        True
        >>> signature(block("Conv2d")) == signature(block("Conv2d", "Sequential"))
        False
        >>> signature(block("Linear", "Identity")) == signature(block("Linear", "DropPath"))
        True
    """
    children = node.get("children") or ()
    inner = (
        ()
        if depth >= 6
        else tuple(signature(c, depth + 1) for c in children if c.get("kind") == "module")
    )
    kind = str(node.get("type"))
    return ("Identity" if kind in PASS_THROUGH and not inner else kind, inner)


#: parameter-free layers a block holds as either an ``nn.Identity`` or a random drop by its
#: rate: a ViT's stochastic depth rises from 0 over its blocks, so block 0 holds
#: ``nn.Identity()`` where the others hold ``DropPath`` (facebookresearch/dino: the advice
#: read "blocks[1-11] ... 11 identical Block layers" beside the tree's blocks[0-11])
PASS_THROUGH = frozenset({"Identity", "DropPath", "StochasticDepth", "Dropout", "Dropout1d",
                          "Dropout2d", "Dropout3d", "AlphaDropout", "DropBlock2d"})  # fmt: skip


def same_size(group: list[Mapping[str, Any]]) -> bool:
    """The members save activations of one size for backward (within 25%), where that was
    counted: a transformer's blocks do; MNIST's conv1 (1 -> 32 channels) and conv2 (32 -> 64)
    are layers of one type, not identical layers.

    Example:
        >>> same_size([{"activation_bytes": 100}, {"activation_bytes": 110}])
        True
        >>> same_size([{"activation_bytes": 100}, {"activation_bytes": 300}])
        False
    """
    sizes = [m.get("activation_bytes") for m in group]
    if not all(isinstance(v, (int, float)) and v > 0 for v in sizes):
        return True  # not counted (or nothing saved): the structure decides
    return max(sizes) <= 1.25 * min(sizes)  # type: ignore[type-var, operator]


def same_params(group: list[Mapping[str, Any]]) -> bool:
    """The members hold as many parameters each, where that was counted (``params``): a
    transformer's blocks do; a super-resolution net's conv1 .. conv4 (1 -> 64 channels 5x5,
    64 -> 64, 64 -> 32, 32 -> 9) are convolutions of one type and four shapes, no stack of
    identical layers to compile or thin out.

    Example:
        >>> same_params([{"params": 36928}, {"params": 36928}, {}])
        True
        >>> same_params([{"params": 36928}, {"params": 18464}])
        False
    """
    counts = {m.get("params") for m in group if isinstance(m.get("params"), int)}
    return len(counts) <= 1


def numbered_run(group: list[Mapping[str, Any]]) -> bool:
    """Members numbered one after the other (``h.0`` .. ``h.3``, ``layer1`` .. ``layer4``): a
    stack of layers. Same-type layers at scattered places of a Sequential (DCGAN's Conv2d at
    0, 2, 5, 8, 11 between its norms and activations) are no stack.

    Example:
        >>> numbered_run([{"path": f"h.{i}"} for i in range(4)])
        True
        >>> numbered_run([{"path": f"main.{i}"} for i in (0, 2, 5, 8)])
        False
    """
    numbers = []
    stems = set()
    for member in group:
        match = _NUMBERED.match(label(member))
        if match is None:
            return False
        stems.add(match.group(1))
        numbers.append(int(match.group(2)))
    numbers.sort()
    return len(stems) == 1 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def candidates(
    tree: Mapping[str, Any], step: float, threshold: float, wrapper_share: float
) -> list[tuple[Mapping, str, list | None]]:
    """Leaf-most nodes (or stacks of identical layers) taking >= ``threshold`` of the step, as
    ``(node, label, layers or None)``; a node with children taking >= ``wrapper_share`` is the
    model wrapped, looked into rather than advised.

    Example:
        >>> attn = {"path": "attn", "kind": "module", "type": "Attention", "children": []}
        >>> layer = lambda i, ms: {"path": f"h.{i}", "name": f"h.{i}", "kind": "module",
        ...                        "type": "Block", "total_ms": {"mean": ms}, "children": [attn]}
        >>> model = {"path": "gpt", "kind": "module", "type": "GPT", "total_ms": {"mean": 10.0},
        ...          "children": [layer(0, 3.3), layer(1, 2.9)]}
        >>> tree = {"kind": "root", "path": "", "total_ms": {"mean": 10.0}, "children": [model]}
        >>> [(label, len(layers)) for _, label, layers in candidates(tree, 10.0, 0.3, 0.8)]
        [('h[0-1]', 2)]
    """
    found: list[tuple[Mapping, str, list | None]] = []
    tops = [c for c in tree.get("children") or () if c.get("kind") == "module"]

    def named(text: str, top: str | None) -> str:
        # the first model's paths are relative to it ("main"); with several models (a GAN's
        # Generator and Discriminator, each with a "main") the title says whose, and so it does
        # for a numbered child of an nn.Sequential model ("Sequential.0", not "0")
        if top and text.startswith("["):  # (an nn.Sequential model's items: "Sequential[0-3]")
            return f"{top}{text}"
        if top and (len(tops) > 1 or text.split(".", 1)[0].isdigit()) and text != top and (
            not text.startswith(top + ".")
        ):
            return f"{top}.{text}"
        return text

    def visit(node: Mapping[str, Any], top: str | None) -> bool:
        """Returns True when this node or a descendant was recorded."""
        below, first = False, len(found)
        for child in node.get("children") or ():
            below = visit(child, top or (label(child) if node is tree else None)) or below
        if node.get("kind") not in ("module", "region", "root"):
            return below
        # a stack of >= MIN_REPEATS identical layers; or, below, only some of >= 2 identical
        # layers themselves (layers.0 at 33%, layers.1 at 29%): the stack is the cause
        group = repeated_group(node, 2 if below else MIN_REPEATS)
        if group and sum(node_ms(c) for c in group[0]) >= threshold * step:
            members = {id(c) for c in group[0]} | {  # (a made block: its parts)
                id(part) for c in group[0] if c.get("block") for part in c["children"]}
            if not below or all(id(entry[0]) in members for entry in found[first:]):
                del found[first:]
                found.append((node, named(group[1], top), group[0]))
                return True
        if below:
            return True
        wrapper = bool(node.get("children")) and node_ms(node) >= wrapper_share * step
        if node.get("kind") != "root" and not wrapper and node_ms(node) >= threshold * step:
            found.append((node, named(label(node), top), None))
            return True
        return False

    visit(tree, None)
    return merge_sibling_layers(found)


def merge_sibling_layers(found: list) -> list:
    """Same-type sibling modules of as many parameters that each dominate (``layers.0``,
    ``layers.1``) are one layer stack: one advice for the group, not one per layer.

    Example:
        >>> merge_sibling_layers({})  # (a session without the evidence this rule reads)
        []
    """
    by_parent: dict[tuple[str, str, Any], list] = {}
    for entry in found:
        node, _, group = entry
        path = str(node.get("path") or "")
        if group is None and node.get("kind") == "module" and node.get("type") and "." in path:
            key = (path.rsplit(".", 1)[0], str(node["type"]), node.get("params"))
            by_parent.setdefault(key, []).append(entry)
    merged: list = []
    done: set[int] = set()
    for entry in found:
        node = entry[0]
        path = str(node.get("path") or "")
        parent = path.rsplit(".", 1)[0]
        key = (parent, str(node.get("type")), node.get("params")) if "." in path else None
        siblings = by_parent.get(key) if key else None
        if not siblings or len(siblings) < 2:
            merged.append(entry)
        elif id(siblings[0]) not in done:
            done.add(id(siblings[0]))
            nodes = [e[0] for e in siblings]
            first, last = label(nodes[0]), label(nodes[-1])
            prefix, a, b = key[0], first.rsplit(".", 1)[-1], last.rsplit(".", 1)[-1]
            merged.append((nodes[0], f"{prefix}[{a}-{b}]", nodes))
    return merged
