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


_SPAN = re.compile(r"(`+)(.+?)\1")


def inline(text: str) -> str:
    """Text with `code` spans: the spans stay code (their contents verbatim: ``<``, ``*`` and
    ``&`` need no escape there, and escaped ones would show literally), the rest is escaped
    as :func:`escape` does; pipes are escaped everywhere (a table cell).

    Example:
        >>> inline("hand-written (`x.sigmoid().log() * a<b`): *fuse*")
        'hand-written (`x.sigmoid().log() * a<b`): \\\\*fuse\\\\*'
    """
    text = str(text).replace("\n", " ")
    out, at = [], 0
    for match in _SPAN.finditer(text):
        out.append(escape(text[at : match.start()]))
        out.append(code_span(match.group(2)).replace("|", "\\|"))
        at = match.end()
    out.append(escape(text[at:]))
    return "".join(out)


def table_code(text: str) -> str:
    """Source text as a code span in a Markdown table cell: verbatim but for its pipes.

    Example:
        >>> table_code("y = a[m < 0.5] * b | c")
        '`y = a[m < 0.5] * b \\\\| c`'
    """
    return code_span(str(text)).replace("|", "\\|") if text else ""


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
