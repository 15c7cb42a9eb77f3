"""`torchdoctor run -m pkg.train`: a module run as `python -m` runs it (relative imports,
the current directory on sys.path, a package's __main__), and bad names are said clearly."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from torchdoctor.cli import main
from torchdoctor.collect.script import ScriptNotFoundError
from torchdoctor.collect.script_module import load_module, load_target
from torchdoctor.commands.run import parse_args
from torchdoctor.commands.tune import parse_args as tune_parse_args

TRAIN = """\
import sys
import torch
from .model import make  # a relative import: only works as a module of the package

torch.manual_seed(0)
net = make()
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for step in range(int(sys.argv[1])):
    opt.zero_grad()
    net(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
print("argv0", sys.argv[0].endswith("train.py"), "package", __package__, "name", __name__)
"""


@pytest.fixture()
def package(tmp_path, monkeypatch):
    pkg = tmp_path / "proj"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(4, 1)\n")
    (pkg / "train.py").write_text(TRAIN)
    (pkg / "__main__.py").write_text("from proj import train  # noqa\n")
    monkeypatch.chdir(tmp_path)
    yield pkg
    for name in [n for n in sys.modules if n.split(".")[0] in ("proj", "bare")]:
        del sys.modules[name]  # (each test's package is a new one under the same name)


def test_a_module_runs_as_python_m_runs_it(package, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "-m", "proj.train", "5"]) == 0
    printed = capsys.readouterr().out
    assert "argv0 True package proj name __main__" in printed
    session = json.loads((out / "session.json").read_text())
    assert session["label"] == "proj.train"
    assert len(session["steps"]) >= 3  # 5 optimizer steps, the first skipped as warm-up


def test_the_module_name_may_be_attached_and_a_package_runs_its_main(package, tmp_path):
    assert main(["run", "--out", str(tmp_path / "o1"), "-mproj.train", "3"]) == 0
    assert load_module("proj").spec.name == "proj.__main__"


def test_bad_module_names_are_refused_with_what_was_expected(package, tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "o"), "-m", "proj.nosuch"]) == 2
    assert "no module named 'proj.nosuch'" in capsys.readouterr().err
    with pytest.raises(ScriptNotFoundError, match="expected a dotted module name"):
        load_module("proj/train.py")
    (package.parent / "bare").mkdir()
    (package.parent / "bare" / "__init__.py").write_text("")
    with pytest.raises(ScriptNotFoundError, match="without a __main__ module"):
        load_module("bare")
    with pytest.raises(SystemExit):
        main(["run", "-m"])
    assert "-m needs a module name" in capsys.readouterr().err


def test_options_before_m_are_ours_and_everything_after_the_module_is_its(package):
    import argparse

    from torchdoctor.commands.run import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parse_args(parser, ["--warmup", "2", "-m", "proj.train", "--warmup", "7"])
    assert (args.module, args.warmup, args.script_args) == ("proj.train", 2, ["--warmup", "7"])
    tune = argparse.ArgumentParser()
    from torchdoctor.commands.tune import add_arguments as tune_arguments

    tune_arguments(tune)
    targs = tune_parse_args(tune, ["-m", "proj.train", "3"])
    assert (targs.script, targs.script_args) == ("-m proj.train", ["3"])
    assert load_target(targs.script).spec.name == "proj.train"
    assert Path(load_target(targs.script).path).name == "train.py"


def test_a_module_file_is_linted_by_run(package, tmp_path):
    (package / "train.py").write_text(
        TRAIN.replace("opt.step()\n", "opt.step()\n    print(net(torch.ones(1, 4)).item())\n")
    )
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "-m", "proj.train", "3"]) == 0
    session = json.loads((out / "session.json").read_text())
    assert any(f["code"] == "TD201" for f in session.get("lint") or []), textwrap.shorten(
        str(session.get("lint")), 300
    )
