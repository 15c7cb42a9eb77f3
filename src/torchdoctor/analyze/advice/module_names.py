"""Module nodes named for advice: with their model's name when the step calls several models.

The profiler names the first top-level model's modules by their own paths ("gru") and the
others' with their model's ("Dec.gru"); in the seq2seq tutorial's tree, "gru" read as either the
encoder's or the decoder's. Advice names both with their model when there are several.

Example:
    >>> tree = {"children": [{"kind": "module", "path": "Enc", "children": [
    ...     {"kind": "module", "path": "gru"}]}, {"kind": "module", "path": "Dec", "children": [
    ...     {"kind": "module", "path": "Dec.gru"}]}]}
    >>> [name for _, name in named_modules(tree)]
    ['Enc', 'Enc.gru', 'Dec', 'Dec.gru']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torchdoctor.session_read import walk


def named_modules(tree: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], str]]:
    """Each module node under the tree's top-level modules, with the name advice gives it.

    Example:
        >>> tree = {"children": [{"kind": "module", "path": "net", "children": [
        ...     {"kind": "module", "path": "fc"}]}]}
        >>> [name for _, name in named_modules(tree)]  # one model: its own paths
        ['net', 'fc']
    """
    tops = [c for c in tree.get("children") or () if c.get("kind") == "module"]
    for top in tops:
        model = str(top.get("path") or top.get("name"))
        for node, depth in walk(top):
            if node.get("kind") != "module":
                continue
            name = str(node.get("path") or node.get("name"))
            if len(tops) > 1 and depth > 0 and not name.startswith(f"{model}."):
                name = f"{model}.{name}"
            yield node, name
