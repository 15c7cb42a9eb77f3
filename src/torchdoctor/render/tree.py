"""Console rendering of a Session's module tree (placeholder until the full renderer lands)."""

from __future__ import annotations

from typing import Any


def render_tree_text(session: Any, **options: Any) -> str:
    """The module tree of a session as plain text.

    Example:
        >>> from torchdoctor.session import Session
        >>> render_tree_text(Session.new("a", with_environment=False))
        '(no module tree recorded)'
    """
    tree = session["tree"]
    if not tree:
        return "(no module tree recorded)"
    lines: list[str] = []

    def walk(node: dict, depth: int) -> None:
        lines.append("  " * depth + f"{node['name']}  {node['total_ms']['median']:.3f} ms")
        for child in node.get("children", []):
            walk(child, depth + 1)

    walk(tree, 0)
    return "\n".join(lines)
