"""`torchdoctor lint` command: exit codes, formats, --fix/--diff, pyproject configuration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from torchdoctor.cli import main
from torchdoctor.lint import RULES

FIXTURES = Path(__file__).resolve().parents[1] / "lint_fixtures"
CLEAN = "import torch\n\n\ndef f(a, b):\n    return torch.linalg.solve(a, b)\n"
DIRTY = "import torch\n\nscaler = torch.cuda.amp.GradScaler()\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "clean.py").write_text(CLEAN)
    (tmp_path / "dirty.py").write_text(DIRTY)
    return tmp_path


def test_exit_codes(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--no-config", str(project / "clean.py")]) == 0
    assert main(["lint", "--no-config", str(project)]) == 1
    out = capsys.readouterr().out
    assert f"{project / 'dirty.py'}:3:10: TD504" in out
    assert main(["lint", "--no-config", str(project / "missing.py")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["lint", "--no-config", "--select", "TD999", str(project)]) == 2
    assert "unknown rule code" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["lint", "--format", "xml", str(project)])
    assert info.value.code == 2


def test_syntax_error_reported_and_run_continues(project: Path, capsys) -> None:
    shutil.copy(FIXTURES / "syntax_error.py", project / "broken.py")
    assert main(["lint", "--no-config", "--format", "json", str(project)]) == 1
    codes = {(Path(f["path"]).name, f["code"]) for f in json.loads(capsys.readouterr().out)}
    assert codes == {("broken.py", "TD000"), ("dirty.py", "TD504")}


def test_json_and_sarif(project: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(project)
    main(["lint", "--no-config", "--format", "json", "."])
    (finding,) = json.loads(capsys.readouterr().out)
    assert finding["code"] == "TD504" and finding["fixable"] is True
    main(["lint", "--no-config", "--format", "sarif", "."])
    sarif = json.loads(capsys.readouterr().out)
    assert sarif["version"] == "2.1.0" and "sarif-2.1.0" in sarif["$schema"]
    run = sarif["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(RULES)
    (result,) = run["results"]
    assert rules[result["ruleIndex"]]["id"] == result["ruleId"] == "TD504"
    region = result["locations"][0]["physicalLocation"]["region"]
    assert region["startLine"] == 3 and region["startColumn"] == 10
    assert region["endColumn"] > region["startColumn"]
    assert result["level"] in {"error", "warning", "note"}
    artifact = result["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact == {"uri": "dirty.py", "uriBaseId": "%SRCROOT%"}


def test_github_annotations(project: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(project)
    (project / "odd, name.py").write_text("import torch\nm = torch.nn.DataParallel(m)\n")
    assert main(["lint", "--no-config", "--format", "github", "."]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "::warning file=./dirty.py,line=3,col=10,endLine=3,endColumn=37,"
        "title=TD504 deprecated-cuda-amp-gradscaler::TD504 torch.cuda.amp.GradScaler is "
        "deprecated: use torch.amp.GradScaler('cuda', ...)"
    )
    assert lines[1].startswith("::warning file=./odd%2C name.py,line=2,col=5,")
    assert "title=TD701 data-parallel::TD701 torch.nn.DataParallel" in lines[1]
    assert all("\n" not in line for line in lines)


def test_diff_previews_and_fix_writes(project: Path, capsys) -> None:
    assert main(["lint", "--no-config", "--diff", str(project)]) == 1
    out = capsys.readouterr().out
    assert '+scaler = torch.amp.GradScaler("cuda")' in out
    assert (project / "dirty.py").read_text() == DIRTY  # nothing written
    assert main(["lint", "--no-config", "--fix", str(project)]) == 0  # nothing left
    assert (project / "dirty.py").read_text() == DIRTY.replace(
        "torch.cuda.amp.GradScaler()", 'torch.amp.GradScaler("cuda")'
    )
    assert (project / "clean.py").read_text() == CLEAN


def test_fix_reports_what_it_cannot_fix(tmp_path: Path, capsys) -> None:
    shutil.copy(FIXTURES / "fix_cases.py", tmp_path / "cases.py")
    assert main(["lint", "--no-config", "--fix", "--format", "json", str(tmp_path)]) == 1
    left = json.loads(capsys.readouterr().out)
    assert [(f["code"], f["fixable"]) for f in left] == [("TD502", False), ("TD302", False)]
    assert (tmp_path / "cases.py").read_text() == (FIXTURES / "fix_cases.py.fixed").read_text()


def test_pyproject_configuration(project: Path, capsys) -> None:
    (project / "loader.py").write_text(
        "from torch.utils.data import DataLoader\nl = DataLoader(ds)\n"
    )
    (project / "pyproject.toml").write_text(
        '[tool.torchdoctor.lint]\nignore = ["TD5"]\nexclude = ["skip_*.py"]\n'
        '[tool.torchdoctor.lint.per-file-ignores]\n"loader.py" = ["TD401"]\n'
    )
    (project / "skip_me.py").write_text(DIRTY)
    assert main(["lint", str(project)]) == 0
    assert main(["lint", "--select", "TD504", str(project)]) == 0  # ignore still applies
    assert main(["lint", "--no-config", str(project)]) == 1
    capsys.readouterr()
    (project / "pyproject.toml").write_text('[tool.torchdoctor.lint]\nselect = "TD5"\n')
    assert main(["lint", str(project)]) == 2
    assert "must be a list of strings" in capsys.readouterr().err


def test_flake8_plugin_runs_through_flake8(project: Path) -> None:
    from flake8.main.application import Application

    app = Application()
    app.run(
        [
            "--isolated",
            "--select",
            "TD",
            "--exit-zero",
            str(project / "dirty.py"),
            str(project / "clean.py"),
        ]
    )
    assert app.result_count == 1
