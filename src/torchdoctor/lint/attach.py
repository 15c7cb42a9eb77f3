"""Attach lint findings to a Session so the advice layer can weigh them by measured heat."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from torchdoctor.lint.finding import Finding


def attach_findings(session: Any, findings: Iterable[Finding | dict[str, Any]]) -> Any:
    """Append findings to ``session["lint"]`` (a Session dict, or an object with a ``lint``
    list or a ``to_dict``-backed ``data`` dict); duplicates (same code, path, line, column)
    are skipped. Returns ``session``.

    Example:
        >>> s = {"schema_version": 1, "lint": []}
        >>> f = Finding("TD202", "warning", "m", "train.py", 3, 5, 3, 9)
        >>> len(attach_findings(attach_findings(s, [f]), [f])["lint"])
        1
    """
    if isinstance(session, MutableMapping):
        target = session.setdefault("lint", [])
    elif isinstance(session, Mapping) and hasattr(session, "__setitem__"):  # torchdoctor.Session
        if not isinstance(session.get("lint"), list):
            session["lint"] = []
        target = session["lint"]
    elif isinstance(getattr(session, "lint", None), list):
        target = session.lint
    elif isinstance(getattr(session, "data", None), MutableMapping):
        target = session.data.setdefault("lint", [])
    else:
        raise TypeError(
            f"attach_findings needs a Session dict or an object with a `lint` list, got "
            f"{type(session).__name__}; pass session.to_dict() or a torchdoctor Session"
        )
    if not isinstance(target, list):
        raise TypeError(f'session["lint"] must be a list, got {type(target).__name__}')
    seen = {(d.get("code"), d.get("path"), d.get("line"), d.get("column")) for d in target}
    for item in findings:
        data = item.to_dict() if isinstance(item, Finding) else Finding.from_dict(item).to_dict()
        key = (data["code"], data["path"], data["line"], data["column"])
        if key not in seen:
            seen.add(key)
            target.append(data)
    return session


def findings_at(session: Any, path: str, line: int) -> list[dict[str, Any]]:
    """Attached findings whose span covers ``path:line`` (to join them with sync records or
    module sources by file and line).

    Example:
        >>> s = attach_findings({}, [Finding("TD201", "warning", "m", "t.py", 4, 1, 6, 2)])
        >>> [f["code"] for f in findings_at(s, "t.py", 5)]
        ['TD201']
    """
    data = session if isinstance(session, MutableMapping) else getattr(session, "data", None)
    items = data.get("lint", []) if data is not None else getattr(session, "lint", [])
    return [
        f
        for f in items
        if _same_file(f.get("path", ""), path) and f["line"] <= line <= f.get("end_line", f["line"])
    ]


def _same_file(a: str, b: str) -> bool:
    import os.path

    if a == b:
        return True
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False
