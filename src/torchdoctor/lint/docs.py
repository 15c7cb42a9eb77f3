"""Generate docs/lint-rules.md from the rule registry (``python -m torchdoctor.lint.docs``)."""

from __future__ import annotations

from torchdoctor.lint.registry import RULES

_FAMILIES = {
    "TD0": "Linter",
    "TD1": "Linear algebra",
    "TD2": "Host-device synchronization",
    "TD3": "Loops and vectorization",
    "TD4": "Data pipeline",
    "TD5": "Precision and engine",
    "TD6": "Inference loops",
    "TD7": "Training loop and distributed training",
}

_INTRO = """\
# torchdoctor lint rules

Generated from `torchdoctor.lint.registry` by `python -m torchdoctor.lint.docs`; do not edit
by hand. Codes are stable once published. Run `torchdoctor lint PATH...`; suppress one line
with `# noqa: TD201`; configure in pyproject.toml:

```toml
[tool.torchdoctor.lint]
select = ["TD"]              # codes or prefixes (default: all)
ignore = ["TD402"]
exclude = ["legacy/*"]
[tool.torchdoctor.lint.per-file-ignores]
"tests/*" = ["TD2"]
```

Output: `--format text` (flake8 style), `json` (the Session `Finding` list), `sarif`
(SARIF 2.1.0 for GitHub code scanning), `github` (workflow commands: annotations on the pull
request's diff, `::warning file=...,line=...,col=...,title=TD201::...`). `--fix` writes the safe fixes (marked *autofix*
below), `--diff` previews them. Exit code 0 when clean, 1 when findings remain, 2 on usage
error. Also available as a flake8 plugin (`flake8 --select TD`) and a pre-commit hook
(`id: torchdoctor-lint`). Findings carry 1-based lines and columns; `end_column` is exclusive.

Rules are heuristics over source text: they match calls by qualified name (import aliases
resolve), and some look across the files linted together (whether the project moves data to
CUDA; whether every caller of a sampling function runs it under no_grad; whether a method
called every step reads tensors on the host), but they cannot know types, so tensor-ness is inferred from the call (`.item()`,
`torch.*`), and module-ness from names (`model`, `encoder`, `self.net`, ...).

| code | name | severity | what | replacement | autofix | seed |
|---|---|---|---|---|---|---|
"""


def rules_markdown() -> str:
    """The full docs/lint-rules.md text.

    Example:
        >>> "| TD101 |" in rules_markdown()
        True
    """
    lines = [_INTRO.rstrip("\n")]
    for rule in RULES.values():
        replacement = f"`{rule.replacement}`" if rule.replacement else ""
        lines.append(
            f"| {rule.code} | {rule.name} | {rule.severity} | {rule.summary} | {replacement} | "
            f"{'yes' if rule.autofix else ''} | {rule.seed or ''} |"
        )
    family = None
    for rule in RULES.values():
        if rule.code[:3] != family:
            family = rule.code[:3]
            lines += ["", f"## {family}xx: {_FAMILIES.get(family, '')}"]
        lines += [
            "",
            f"### {rule.code}",
            "",
            f"**{rule.name}** ({rule.severity}{', autofix' if rule.autofix else ''}): "
            f"{rule.summary}.",
            "",
            f"Fix: {rule.fix}.",
            "",
            "Before:",
            "",
            "```python",
            rule.bad,
            "```",
            "",
            "After:",
            "",
            "```python",
            rule.good,
            "```",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(rules_markdown(), end="")
