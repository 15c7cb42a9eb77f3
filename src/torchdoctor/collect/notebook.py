"""A Jupyter notebook as the script ``torchdoctor run`` runs: its code cells in order, one
after the other, as ``jupyter nbconvert --to script`` would write them.

Each cell starts with a ``# %% [cell N]`` line (N counts code cells from 1, as the notebook
shows them), so a report's ``train.ipynb:57`` is line 57 of that text; the reports quote the
line's code. IPython's own syntax has no Python meaning: line magics (``%matplotlib inline``),
shell escapes (``!pip install ...``), cell magics (``%%time``: the whole cell) and help
(``x?``) are kept as comments, so line numbers stay and the rest of the notebook runs as plain
Python. The text is registered with ``linecache`` under the notebook's path, where tracebacks,
the profiler and the linter read source lines.

Example:
    >>> import json, pathlib, tempfile
    >>> nb = {"cells": [{"cell_type": "markdown", "source": ["# Train"]},
    ...                 {"cell_type": "code", "source": ["%matplotlib inline\\n", "x = 1"]},
    ...                 {"cell_type": "code", "source": "print(x + 1)"}], "nbformat": 4}
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.ipynb"
    >>> _ = path.write_text(json.dumps(nb))
    >>> print(notebook_source(str(path)))
    # %% [cell 1]
    # %matplotlib inline  (IPython syntax, not run)
    x = 1
    <BLANKLINE>
    # %% [cell 2]
    print(x + 1)
    <BLANKLINE>
"""

from __future__ import annotations

import json
import linecache
import re

#: a line of IPython syntax: a magic, a shell escape, help (``obj?``), ``!cmd`` assignments
_IPYTHON_LINE = re.compile(r"^\s*(%|!|\?)|^\s*[\w.]+\?\??\s*$|^\s*\w+\s*=\s*!")


#: the session's note when a notebook ran (the report's line numbers are of its code cells)
NOTEBOOK_NOTE = (
    "the notebook's code cells ran in order as one script (IPython magics and shell escapes "
    "kept as comments, not run): a line number counts from its first code cell, and each cell "
    "starts with a `# %% [cell N]` line"
)


def is_notebook(path: str) -> bool:
    """Whether ``path`` names a notebook (by its extension).

    Example:
        >>> is_notebook("train.ipynb"), is_notebook("train.py")
        (True, False)
    """
    return path.lower().endswith(".ipynb")


def notebook_source(path: str) -> str:
    """The Python text of the notebook's code cells (see the module docstring), registered
    with ``linecache``; ValueError naming the file when it is no notebook."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not a Jupyter notebook (invalid JSON: {error.msg} at line "
            f"{error.lineno}); expected an .ipynb file saved by Jupyter, or a .py script"
        ) from None
    cells = document.get("cells") if isinstance(document, dict) else None
    if not isinstance(cells, list):
        worksheets = document.get("worksheets") if isinstance(document, dict) else None
        if isinstance(worksheets, list) and worksheets:  # nbformat 3
            cells = worksheets[0].get("cells")
    if not isinstance(cells, list):
        raise ValueError(
            f"{path} has no list of cells; expected a Jupyter notebook (nbformat 3 or 4), or a "
            ".py script"
        )
    parts = []
    number = 0
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        number += 1
        text = cell.get("source", cell.get("input", ""))
        text = "".join(text) if isinstance(text, list) else str(text)
        lines = text.splitlines()
        if lines and lines[0].lstrip().startswith("%%"):  # a cell magic: the cell is not Python
            lines = [f"# {line}" for line in lines]
            lines[0] += "  (IPython cell magic, not run)"
        else:
            lines = _comment_ipython_lines(lines)
        parts.append("\n".join([f"# %% [cell {number}]", *lines]) + "\n")
    source = "\n".join(parts)
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    return source


def _comment_ipython_lines(lines: list[str]) -> list[str]:
    """The cell's lines with those of IPython syntax commented out; only a line that starts a
    statement can be one (a continuation line ``    % loss)`` or ``    != b):`` is Python).

    Example:
        >>> for line in _comment_ipython_lines(["%time f()", "s = ('%d'", "     % 3)", "x = !ls"]):
        ...     print(line)
        # %time f()  (IPython syntax, not run)
        s = ('%d'
             % 3)
        # x = !ls  (IPython syntax, not run)
    """
    out, depth, continued = [], 0, False
    for line in lines:
        starts = depth == 0 and not continued
        if starts and _IPYTHON_LINE.match(line):
            out.append(f"# {line.strip()}  (IPython syntax, not run)")
        else:
            out.append(line)
        depth, continued = _after(line, depth)
    return out


_TRIPLE = ("'''", '"""')


def _after(line: str, depth: int) -> tuple[int, bool]:
    """Bracket depth after ``line`` (outside strings and comments) and whether it ends in a
    backslash continuation: a rough scan (a triple-quoted string over lines is not followed).

    Example:
        >>> _after("x = f(a, '(' # )", 0), _after("y = 1 + \\\\", 0)
        ((1, False), (0, True))
    """
    quote = None
    index = 0
    while index < len(line):
        char = line[index]
        if quote is not None:
            if char == "\\":
                index += 1
            elif line.startswith(quote, index):
                index += len(quote) - 1
                quote = None
        elif char == "#":
            break
        elif char in "'\"":
            quote = line[index : index + 3] if line[index : index + 3] in _TRIPLE else char
            index += len(quote) - 1
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        index += 1
    return depth, line.rstrip().endswith("\\")


def notebook_globals() -> dict[str, object]:
    """Names a notebook may use without importing them, as IPython provides: ``display``
    (IPython's when it is installed, else one that prints each object).

    Example:
        >>> callable(notebook_globals()["display"])
        True
    """
    try:
        from IPython.display import display
    except ImportError:  # plain Python: print what the notebook would have shown

        def display(*objects: object, **_: object) -> None:
            for item in objects:
                print(repr(item))

    return {"display": display}

