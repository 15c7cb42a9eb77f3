"""`torchdoctor run train.ipynb`: the notebook's code cells run in order as one script, IPython
syntax left out as comments, its lines reported and linted as the cells' lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchdoctor.collect.notebook import notebook_source

CELLS = [
    ("markdown", ["# A tiny training notebook"]),
    ("code", ["%matplotlib inline\n", "import torch\n", "!echo not-run\n", "torch.manual_seed(0)"]),
    ("code", ["%%time\n", "print('a cell magic: not run')"]),
    ("code", ["model = torch.nn.Linear(8, 2)\n", "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n",
              "x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))\n", "display(model)"]),
    ("code", ["for step in range(30):\n",
              "    loss = torch.nn.functional.cross_entropy(model(x), y)\n",
              "    opt.zero_grad()\n", "    loss.backward()\n", "    opt.step()\n",
              "    print('loss', loss.item())"]),
]  # fmt: skip


def _notebook(path: Path) -> Path:
    cells = [{"cell_type": kind, "metadata": {}, "source": source} for kind, source in CELLS]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4}))
    return path


def test_the_cells_become_one_script_with_ipython_syntax_as_comments(tmp_path):
    source = notebook_source(str(_notebook(tmp_path / "train.ipynb")))
    lines = source.splitlines()
    assert [ln for ln in lines if ln.startswith("# %% [cell")] == [
        f"# %% [cell {n}]" for n in (1, 2, 3, 4)
    ]  # code cells only, numbered from 1
    assert "# %matplotlib inline  (IPython syntax, not run)" in lines
    assert "# !echo not-run  (IPython syntax, not run)" in lines
    assert "# %%time  (IPython cell magic, not run)" in lines
    assert "# print('a cell magic: not run')" in lines
    compile(source, "train.ipynb", "exec")  # plain Python now


def test_continuation_lines_that_start_with_percent_or_bang_stay_python(tmp_path):
    path = tmp_path / "fmt.ipynb"
    cell = ["msg = ('%d steps'\n", "       % 3)\n", "ok = (1\n", "      != 2)\n", "%env A=1"]
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": cell}], "nbformat": 4}))
    lines = notebook_source(str(path)).splitlines()
    assert "       % 3)" in lines and "      != 2)" in lines  # inside brackets: Python
    assert "# %env A=1  (IPython syntax, not run)" in lines
    scope: dict = {}
    exec(compile("\n".join(lines), "fmt.ipynb", "exec"), scope)
    assert scope["msg"] == "3 steps" and scope["ok"] is True


def test_run_profiles_a_notebook_and_names_its_lines(tmp_path):
    notebook = _notebook(tmp_path / "train.ipynb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torchdoctor", "run", "--out", "prof", str(notebook)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "not-run" not in done.stdout and "a cell magic" not in done.stdout
    assert "Linear(in_features=8, out_features=2, bias=True)" in done.stdout  # display()
    session = json.loads((tmp_path / "prof" / "session.json").read_text())
    assert len(session["steps"]) >= 20
    assert any("notebook's code cells" in note for note in session["config"]["notes"])
    item_line = next(n for n, ln in enumerate(notebook_source(str(notebook)).splitlines(), 1)
                     if "loss.item()" in ln)  # fmt: skip
    syncs = [r for r in session["syncs"] if r["file"].endswith("train.ipynb")]
    assert [r["line"] for r in syncs] == [item_line]
    lint = [f for f in session["lint"] if f["code"] == "TD201"]
    assert [f["line"] for f in lint] == [item_line]  # linted as the cells, not as JSON


@pytest.mark.parametrize(
    ("text", "expected"),
    [("not json", "invalid JSON"), ('{"cells": 3}', "no list of cells")],
)
def test_a_file_that_is_no_notebook_is_a_clear_error(tmp_path, text, expected):
    path = tmp_path / "bad.ipynb"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "torchdoctor", "run", "--out", "prof", str(path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr
