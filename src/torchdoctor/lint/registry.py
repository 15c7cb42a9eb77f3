"""Registry of lint rules: stable codes, names, severities, and the documented fix.

Codes come in families: TD0xx the linter itself, TD1xx linear algebra, TD2xx host-device
syncs, TD3xx loops and vectorization, TD4xx data pipeline, TD5xx precision and engine, TD6xx
inference loops. A published code never changes meaning; retired codes are not reused.
"""

from __future__ import annotations

from collections.abc import Iterable

from torchdoctor.lint.families import FAMILIES
from torchdoctor.lint.rule import Rule

TD000 = Rule(
    "TD000",
    "syntax-error",
    "error",
    "the file could not be parsed; nothing else was checked",
    "fix the syntax error",
    "def f(:",
    "def f():",
)

#: code -> rule, in code order. Codes are stable once published.
RULES: dict[str, Rule] = {
    r.code: r
    for r in sorted([TD000, *(r for f in FAMILIES for r in f.RULES)], key=lambda r: r.code)
}


def resolve_codes(
    select: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> set[str]:
    """Expand ``select``/``ignore`` code prefixes (``TD2``, ``TD301``, ``ALL``) to rule codes.

    Raises ValueError naming an entry that matches no rule.

    Example:
        >>> sorted(resolve_codes(select=["TD4"], ignore=["TD403"]))
        ['TD000', 'TD401', 'TD402', 'TD404', 'TD405']
    """

    def expand(items: Iterable[str], what: str) -> set[str]:
        out: set[str] = set()
        for raw in items:
            item = raw.strip().upper()
            if not item:
                continue
            if item == "ALL":
                out |= set(RULES)
                continue
            matched = {c for c in RULES if c.startswith(item)}
            if not matched:
                known = ", ".join(RULES)
                raise ValueError(
                    f"unknown rule code {raw!r} in {what}; expected a code or prefix of: {known}"
                )
            out |= matched
        return out

    # A file that cannot be parsed is always reported unless TD000 is ignored explicitly.
    chosen = set(RULES) if select is None else expand(select, "--select") | {"TD000"}
    if ignore:
        chosen -= expand(ignore, "--ignore")
    return chosen
