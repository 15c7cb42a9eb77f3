"""JSON rendering: the Session document itself, as saved by ``Session.save``.

Example:
    >>> from torchdoctor.session import Session
    >>> '"schema_version": 1' in render_json(Session.new("a", with_environment=False))
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def render_json(session: Mapping[str, Any], indent: int | None = 1) -> str:
    """The session as JSON text (strict: NaN and infinity are rejected, not written).

    Example:
        >>> import json
        >>> json.loads(render_json({"schema_version": 1, "label": "x"}))["label"]
        'x'
    """
    data = session.to_dict() if hasattr(session, "to_dict") else dict(session)
    try:
        return json.dumps(data, indent=indent, allow_nan=False, default=_default)
    except ValueError as exc:
        raise ValueError(
            f"session holds a value JSON cannot represent ({exc}); replace NaN/inf with null "
            "before rendering"
        ) from None


def _default(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
