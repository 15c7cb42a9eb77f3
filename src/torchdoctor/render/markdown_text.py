"""Small text helpers shared by the Markdown-producing renderers (report and diff).

Example:
    >>> escape("<img src=x onerror=alert(1)>")
    '&lt;img src=x onerror=alert(1)&gt;'
"""

from __future__ import annotations

import re

_MD_SPECIAL = re.compile(r"([\\`*|])")


def escape(text: str) -> str:
    """Make text safe inline in Markdown: HTML-escaped (no raw tags), table pipes escaped.

    Example:
        >>> escape("a|b & <c>")
        'a\\\\|b &amp; &lt;c&gt;'
    """
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def code_span(text: str) -> str:
    """Inline code whose backtick fence is longer than any backtick run inside.

    Example:
        >>> code_span("a`b")
        '``a`b``'
    """
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace(chr(10), ' ')}{pad}{fence}"


def code_block(text: str, language: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run in ``text``.

    Example:
        >>> code_block("x = 1", "python").splitlines()[0]
        '```python'
    """
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"
