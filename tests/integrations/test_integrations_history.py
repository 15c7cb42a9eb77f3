"""The run history: written by `run` and `profile`, read by `history` and `diff`."""

from __future__ import annotations

import json
import os
import subprocess

import torch

import torchdoctor
from torchdoctor.cli import main
from torchdoctor.history import history_path, list_runs, load_session, record_run

SCRIPT = """
import sys, torch
net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 4):
    opt.zero_grad()
    net(torch.randn(4, 8)).sum().backward()
    opt.step()
"""


def _run(args, cwd, monkeypatch, capsys):
    """`torchdoctor run ...` in this process (as the run-command tests do): (code, stderr)."""
    monkeypatch.chdir(cwd)
    code = main(["run", *args])
    return code, capsys.readouterr().err


def _profile(**options):
    net = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    return torchdoctor.profile(lambda: net(x).sum().backward(), model=net, steps=3, warmup=1,
                               syncs=False, **options)  # fmt: skip


def test_history_path_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDOCTOR_HISTORY", "off")
    assert history_path() is None
    assert history_path(tmp_path / "x.sqlite") == tmp_path / "x.sqlite"
    monkeypatch.delenv("TORCHDOCTOR_HISTORY")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert history_path() == tmp_path / "cache" / "torchdoctor" / "history.sqlite"


def test_profile_appends_a_row_and_the_session(history_file):
    session = _profile()
    _profile(history=False)
    (row,) = list_runs(history_file)
    assert row["kind"] == "profile" and row["steps"] == 3 and row["device"] == "cpu"
    assert row["step_ms"] == session["step_ms"]["median"]
    assert len(row["step_times"]) == 3 and row["top_module"]
    assert row["script"] == os.path.abspath(__file__)  # the file defining the step function
    assert isinstance(row["advice"], int)
    assert load_session(row["id"], history_file)["step_ms"] == session["step_ms"]


def test_history_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDOCTOR_HISTORY", "off")
    _profile()
    assert not list(tmp_path.rglob("*.sqlite"))


def test_unwritable_history_warns_and_the_run_goes_on(tmp_path, capsys):
    (tmp_path / "dir.sqlite").mkdir()
    assert (
        record_run({"step_ms": {"median": 1.0}}, script=None, path=tmp_path / "dir.sqlite") is None
    )
    assert "run history not written" in capsys.readouterr().err


def test_git_commit_of_the_scripts_repository(tmp_path, history_file, monkeypatch, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(SCRIPT)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    code, err = _run(["--out", "prof", "train.py", "5"], repo, monkeypatch, capsys)
    assert code == 0, err
    (row,) = list_runs(history_file)
    assert row["git_commit"] == head.strip()
    assert row["args"] == ["5"] and row["kind"] == "run" and row["steps"] == 4
    assert row["script"] == str(repo / "train.py")


def test_every_run_is_listed_with_a_sparkline(tmp_path, history_file, monkeypatch, capsys):
    (tmp_path / "train.py").write_text(SCRIPT)
    (tmp_path / "other.py").write_text(SCRIPT)
    for args in (["train.py"], ["train.py", "6"], ["other.py"]):
        code, err = _run(["--out", "prof", *args], tmp_path, monkeypatch, capsys)
        assert code == 0 and "in the history" in err, err
    code, err = _run(["--no-history", "--out", "prof", "train.py"], tmp_path, monkeypatch, capsys)
    assert code == 0 and "in the history" not in err
    elsewhere = tmp_path / "elsewhere.sqlite"
    code, err = _run(["--history", str(elsewhere), "--out", "prof", "train.py"], tmp_path,
                     monkeypatch, capsys)  # fmt: skip
    assert code == 0 and len(list_runs(elsewhere)) == 1

    assert main(["history"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["id", "date", "(UTC)"]
    assert [line.split()[0] for line in lines[1:4]] == ["1", "2", "3"]
    sparks = [line for line in lines if line.startswith(("train.py ", "other.py "))]
    assert len(sparks) == 2 and "2 runs" in sparks[0] and "1 run:" in sparks[1]

    assert main(["history", "train.py", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["args"]) for r in rows] == [(1, []), (2, ["6"])]
    assert main(["history", "--format", "html", "-o", str(tmp_path / "h.html")]) == 0
    page = (tmp_path / "h.html").read_text()
    assert page.count("<svg") == 2 and page.count("<tr>") == 4


def test_diff_accepts_history_ids(tmp_path, history_file, capsys):
    _profile(label="first")
    _profile(label="second")
    assert main(["diff", "1", "2"]) == 0
    assert capsys.readouterr().out.startswith("# torchdoctor diff: first -> second")
    assert main(["diff", "1", "9"]) == 2
    assert "no run 9 in the history" in capsys.readouterr().err


def test_history_last_must_be_positive(capsys):
    import pytest

    from torchdoctor.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["history", "--last", "0"])
    assert stop.value.code == 2
    assert "expected an integer >= 1, got 0" in capsys.readouterr().err
