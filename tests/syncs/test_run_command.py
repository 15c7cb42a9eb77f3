"""`torchdoctor run` / `torchdoctor syncs` on small scripts written by the tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchdoctor.cli import main

TRAIN = """\
import sys
import torch

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randn(16, 1)
for step in range({steps}):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    opt.step()
    print("loss", round(loss.item(), 4))  # line 13: one sync per step
{tail}
"""


def _script(tmp_path: Path, steps: int = 4, tail: str = "", name: str = "train.py") -> Path:
    path = tmp_path / name
    path.write_text(TRAIN.format(steps=steps, tail=textwrap.dedent(tail)))
    return path


def _session(out: Path) -> dict:
    return json.loads((out / "session.json").read_text())


def _subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torchdoctor", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def test_sys_exit_code_is_preserved_and_session_written(tmp_path):
    script = _script(tmp_path, steps=4, tail="sys.exit(3)\n")
    done = _subprocess(["run", "--out", "prof", str(script)], tmp_path)
    assert done.returncode == 3, done.stderr
    assert sum(ln.startswith("loss ") for ln in done.stdout.splitlines()) == 4  # the script's own output is kept
    assert "Host syncs" in done.stdout and "train.py:13" in done.stdout
    session = _session(tmp_path / "prof")
    assert session["config"]["exit_code"] == 3
    assert session["config"]["step_boundary"] == "optimizer"
    assert len(session["steps"]) == 3  # 4 optimizer steps, the first is warm-up
    [record] = session["syncs"]
    assert (record["line"], record["kind"], record["per_step"]) == (13, "item", 1.0)
    assert session["interrupted"] is False


def test_sigterm_still_writes_the_report_and_exits_143(tmp_path):
    """A job killed by SIGTERM (timeout, a scheduler) keeps what was collected."""
    script = _script(
        tmp_path, steps=4, tail="import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n"
    )
    done = _subprocess(["run", "--out", "prof", str(script)], tmp_path)
    assert done.returncode == 143, done.stderr
    assert "terminated by signal 15 (SIGTERM)" in done.stderr
    session = _session(tmp_path / "prof")
    assert session["interrupted"] is True and session["config"]["exit_code"] == 143
    assert len(session["steps"]) == 3


def test_json_format_keeps_stdout_for_the_json_alone(tmp_path):
    """--format json: stdout parses as JSON (pipe it to jq); the script's prints go to stderr."""
    script = _script(tmp_path, steps=4, tail="")
    done = _subprocess(["run", "--format", "json", "--out", "prof", str(script)], tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert len(data["steps"]) == 3
    printed = [ln for ln in done.stderr.splitlines() if ln.startswith("loss ")]
    assert len(printed) == 4 and not any(ln.startswith("loss ") for ln in done.stdout.splitlines())


def test_script_sees_argv0_as_typed(tmp_path):
    """As with `python train.py`: sys.argv[0] is the path given, __file__ absolute."""
    script = tmp_path / "probe0.py"
    script.write_text("import os, sys\nprint('ARGV0', sys.argv[0], os.path.isabs(__file__))\n")
    done = _subprocess(["syncs", "--out", "o", "probe0.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ARGV0 probe0.py True" in done.stdout


def test_exception_traceback_and_exit_code_are_preserved(tmp_path):
    script = _script(tmp_path, steps=3, tail="raise ValueError('boom in the script')\n")
    done = _subprocess(["run", "--out", "prof", str(script)], tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValueError: boom in the script" in done.stderr
    assert f'File "{script}", line 14' in done.stderr
    assert "collect/script.py" not in done.stderr  # torchdoctor's own frames are trimmed
    session = _session(tmp_path / "prof")
    assert session["interrupted"] is True and "boom in the script" in session["error"]
    assert session["config"]["exit_code"] == 1


def test_an_error_inside_a_module_reads_as_without_torchdoctor_and_leads_the_report(tmp_path):
    """The error comes from inside a hooked forward (the sync audit's mode passes the call on):
    no frame of torchdoctor's collection code in the traceback, and the report says first that
    the script raised and where."""
    script = tmp_path / "bad_width.py"
    script.write_text(
        "import torch\nmodel = torch.nn.Linear(10, 2)\nx = torch.randn(4, 12)\n"
        "loss = model(x).sum()\n"
    )
    done = _subprocess(["run", "--out", "prof", str(script)], tmp_path)
    assert done.returncode == 1
    assert "mat1 and mat2 shapes cannot be multiplied" in done.stderr
    assert "torchdoctor/collect" not in done.stderr and "__torch_function__" not in done.stderr
    report = done.stdout.split("torchdoctor report:", 1)[1].splitlines()
    assert report[1].startswith("the script raised RuntimeError: mat1 and mat2 shapes")
    assert "(bad_width.py:4), before a step was complete" in " ".join(" ".join(report[1:3]).split())


def test_a_message_of_several_lines_is_named_by_its_first(tmp_path):
    """torch.load's UnpicklingError ends in "Check the documentation ...": the report names
    the exception and its first line, not the message's last line."""
    script = tmp_path / "loads.py"
    script.write_text("import torch\nraise ValueError('Weights only load failed.\\n(1) try\\nCheck the docs')\n")
    done = _subprocess(["run", "--out", "prof", str(script)], tmp_path)
    assert done.returncode == 1
    assert "the script raised ValueError: Weights only load failed. (loads.py:2)" in done.stderr


def _syncs_with_pythons_handler(tmp_path: Path, script: Path) -> int:
    """`torchdoctor syncs --out prof SCRIPT` with Python's own Ctrl-C handler (a suite started in
    a shell's background inherits SIGINT ignored, and Python keeps that)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return main(["syncs", "--out", str(tmp_path / "prof"), str(script)])
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_writes_the_session_and_exits_130(tmp_path, capsys):
    tail = "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nprint('not reached')\n"
    code = _syncs_with_pythons_handler(tmp_path, _script(tmp_path, steps=3, tail=tail))
    out, err = capsys.readouterr()
    assert code == 130, err[-2000:]
    assert "KeyboardInterrupt" in err and "not reached" not in out
    assert "train.py:13" in out
    assert _session(tmp_path / "prof")["interrupted"] is True


def test_a_ctrl_c_the_script_turns_into_an_exit_still_reads_as_interrupted(tmp_path, capsys):
    """Lightning's graceful shutdown: "Detected KeyboardInterrupt", then exit(1). The session
    said nothing of the Ctrl-C (a plain exit 1); now interrupted, the script's code kept."""
    tail = ("import os, signal\ntry:\n    os.kill(os.getpid(), signal.SIGINT)\n"
            "except KeyboardInterrupt:\n    print('shutting down')\n    sys.exit(1)\n")
    code = _syncs_with_pythons_handler(tmp_path, _script(tmp_path, steps=3, tail=tail))
    out, err = capsys.readouterr()
    assert code == 1 and "shutting down" in out, err[-2000:]
    assert "the script was interrupted (Ctrl-C), and exited with code 1 (its own shutdown)" in err
    assert _session(tmp_path / "prof")["interrupted"] is True
    plain = _script(tmp_path, steps=3, tail="sys.exit(1)\n", name="plain.py")  # (near miss)
    assert main(["syncs", "--out", str(tmp_path / "plain"), str(plain)]) == 1
    assert _session(tmp_path / "plain")["interrupted"] is False


def test_script_sees_main_argv_and_its_directory_first_on_sys_path(tmp_path, capsys):
    (tmp_path / "helper_mod_for_run.py").write_text("VALUE = 41\n")
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys, os\nimport helper_mod_for_run\n"
        "print('NAME', __name__, 'ARGV', sys.argv[1:], 'VALUE', helper_mod_for_run.VALUE + 1)\n"
        "print('PATH0', sys.path[0] == os.path.dirname(os.path.abspath(__file__)))\n"
    )
    argv = sys.argv[:]
    code = main(["syncs", "--out", str(tmp_path / "o"), "--", str(script), "--out", "x", "-v"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "NAME __main__ ARGV ['--out', 'x', '-v'] VALUE 42" in out and "PATH0 True" in out
    assert "one step = the whole run" in err  # no optimizer, markers or modules
    assert sys.argv == argv and "helper_mod_for_run" in sys.modules
    assert "No host-device syncs found." in out


def test_whole_run_is_one_step_and_syncs_are_counted_once(tmp_path, capsys):
    script = tmp_path / "plain.py"
    script.write_text(
        "import torch\nx = torch.arange(5.0).to(torch.get_default_device())\n"
        "for _ in range(3):\n    x.sum().item()\n"
    )
    code = main(["syncs", "--warmup", "2", "--format", "json", "--out", str(tmp_path / "o"),
                 str(script)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "one step = the whole run" in err
    data = json.loads(out)
    assert data["config"]["step_boundary"] == "whole_run"
    assert [(r["line"], r["count"], r["per_step"]) for r in data["syncs"]] == [(4, 3, 3.0)]


def test_step_fn_makes_each_call_a_step(tmp_path, capsys):
    script = tmp_path / "fn.py"
    script.write_text(
        "import torch\nnet = torch.nn.Linear(3, 1)\n"
        "class Loop:\n    def train_step(self, x):\n        return net(x).sum().item()\n"
        "loop = Loop()\nfor _ in range(5):\n    loop.train_step(torch.ones(2, 3))\n"
    )
    out_dir = tmp_path / "o"
    code = main(["syncs", "--step-fn", "Loop.train_step", "--out", str(out_dir), str(script)])
    capsys.readouterr()
    assert code == 0
    session = _session(out_dir)
    assert session["config"]["step_boundary"] == "step_fn"
    assert len(session["steps"]) == 4  # five calls, the first is warm-up
    assert [(r["line"], r["per_step"]) for r in session["syncs"]] == [(5, 1.0)]
    code = main(["syncs", "--step-fn", "nope", "--out", str(out_dir), str(script)])
    assert code == 2 and "Loop.train_step" in capsys.readouterr().err


def test_bad_input_is_reported_plainly(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["run", "--out", out, str(tmp_path / "missing.py")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not os.path.exists(out)  # (a run that never started leaves no empty folder)
    assert main(["run", "--out", out, "--", "torchrun", "--nproc_per_node", "2", "t.py"]) == 2
    assert "-m torchdoctor run train.py" in capsys.readouterr().err  # (the launcher goes first)
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n    pass\n")
    assert main(["run", "--out", out, str(broken)]) == 1
    err = capsys.readouterr().err
    assert "SyntaxError" in err and "syntax error; nothing was run" in err
    assert main(["run", "--out", out, str(broken), "--warmup", "3"]) == 1  # the script's option
    assert "--warmup comes after the script name: it is passed to" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--out", out])
    assert "missing SCRIPT" in capsys.readouterr().err


def test_max_steps_stops_collecting_but_not_the_script(tmp_path, capsys):
    script = _script(tmp_path, steps=7)
    out_dir = tmp_path / "o"
    code = main(["syncs", "--warmup", "1", "--max-steps", "2", "--out", str(out_dir), str(script)])
    out, _ = capsys.readouterr()
    assert code == 0 and out.count("loss ") == 7  # the script ran to its end
    session = _session(out_dir)
    assert len(session["steps"]) == 2
    [record] = session["syncs"]
    assert (record["count"], record["per_step"]) == (2, 1.0)  # later steps are not counted


def test_a_script_that_forks_gets_one_report_from_the_parent(tmp_path):
    """os.fork() in the script: the child runs the rest of the script too, but only the
    parent reports and writes the session; the child exits with its own code."""
    tail = """\
    import os
    pid = os.fork()
    if pid == 0:
        net(x).sum().item()  # a sync in the child: not the parent's
        sys.exit(5)
    _, status = os.waitpid(pid, 0)
    print("child exited", os.waitstatus_to_exitcode(status))
    """
    script = _script(tmp_path, steps=4, tail=tail)
    done = _subprocess(["run", "--out", "prof", str(script)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "child exited 5" in done.stdout
    assert done.stdout.count("Host syncs") == 1 and done.stderr.count("session written") == 1
    session = _session(tmp_path / "prof")
    assert len(session["steps"]) == 3 and session["config"]["exit_code"] == 0
    assert [r["line"] for r in session["syncs"]] == [13]


def test_an_option_after_the_script_is_the_scripts_even_when_torchdoctor_has_it(tmp_path, capsys):
    """makemore's `--max-steps` and many scripts' `--out`: passed on unchanged, as `python
    train.py ...` would, with a notice; torchdoctor's own options go before the script."""
    import argparse

    from torchdoctor.commands.run import add_arguments, parse_args

    parser = argparse.ArgumentParser(prog="torchdoctor run")
    add_arguments(parser)
    args = parse_args(parser, ["--warmup", "2", "train.py", "--max-steps", "600", "--out", "o"])
    assert args.script_args == ["--max-steps", "600", "--out", "o"]
    assert args.warmup == 2 and args.max_steps is None
    assert "--max-steps comes after the script name: it is passed to train.py" in capsys.readouterr().err
    args = parse_args(parser, ["--", "train.py", "--max-steps", "600"])
    assert args.script_args == ["--max-steps", "600"] and capsys.readouterr().err == ""


def test_a_report_that_fails_to_print_keeps_the_scripts_exit_code(tmp_path, capsys, monkeypatch):
    """A bug in a renderer must not turn the user's successful run into a traceback."""
    from torchdoctor.commands import run as run_command

    def broken(*args, **kwargs):
        raise KeyError("group_count")

    monkeypatch.setattr(run_command, "print_report", broken)
    script = _script(tmp_path, steps=3)
    assert main(["run", "--out", str(tmp_path / "o"), "--no-history", str(script)]) == 0
    err = capsys.readouterr().err
    assert "the report could not be printed (KeyError: 'group_count')" in err
    assert (tmp_path / "o" / "session.json").exists()


def test_an_error_raised_while_sigterm_stops_the_script_is_still_a_sigterm(tmp_path):
    """pytorch/examples imagenet under `timeout`: SIGTERM stopped the step, then the DataLoader
    raised "worker killed by signal" while unwinding. The run was terminated, not failed."""
    tail = """\
    import os, signal, time
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except BaseException:
        raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated.")
    """
    script = _script(tmp_path, steps=4, tail=tail)
    done = _subprocess(["run", "--out", "prof", "--no-history", str(script)], tmp_path)
    assert done.returncode == 143, done.stderr
    assert "terminated by signal 15 (SIGTERM); while it stopped: RuntimeError" in done.stderr
    session = _session(tmp_path / "prof")
    assert session["interrupted"] is True and session["config"]["exit_code"] == 143


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_script_runs(
    tmp_path, capsys
):
    """It was found only after the whole run, which then ended without its results."""
    ran = tmp_path / "ran"
    script = tmp_path / "train.py"
    script.write_text(f"open({str(ran)!r}, 'w').write('yes')\n")
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    assert main(["run", "--no-history", "--out", str(taken), str(script)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert not ran.exists()  # the script never ran


def test_a_forked_worker_killed_by_sigterm_dies_quietly_as_without_torchdoctor(tmp_path):
    """A multiprocessing pool's workers are forks of the script: Pool.__exit__ terminates them
    with SIGTERM. They inherited run's SIGTERM handler and printed a Terminated traceback each;
    they die of the signal, as in a plain run, and the script's own run goes on."""
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent("""\
        import multiprocessing as mp, os, signal, time
        def work(i):
            return i * i
        if __name__ == "__main__":
            with mp.get_context("fork").Pool(2) as pool:
                print("squares", sum(pool.map(work, range(4))))
            child = mp.get_context("fork").Process(target=time.sleep, args=(30,))
            child.start()
            time.sleep(0.5)  # (a signal in the instant after the fork is Python's to drop)
            os.kill(child.pid, signal.SIGTERM)
            child.join()
            print("child exit", child.exitcode)
    """))
    done = _subprocess(["run", "--out", "prof", "--no-history", str(script)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "squares 14" in done.stdout and "child exit -15" in done.stdout
    assert "Traceback" not in done.stderr and "Terminated" not in done.stderr


def test_the_output_check_creates_nothing_so_ranks_started_together_cannot_race(tmp_path, capsys):
    """Under torchrun every rank checks --out at once: the check made the missing folder and
    removed it again, and a rank whose check fell between another's making and removing found
    no folder and was refused ("not writable"), failing the whole job."""
    from concurrent.futures import ThreadPoolExecutor

    from torchdoctor.commands.argtypes import unwritable_out

    missing = tmp_path / "prof" / "nested"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: unwritable_out(str(missing)), range(400)))
    assert answers == [None] * 400 and not (tmp_path / "prof").exists()
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    script = tmp_path / "train.py"
    script.write_text("print('ran')\n")
    assert main(["run", "--no-history", "--out", str(taken / "prof"), str(script)]) == 2
    assert f"{taken} is a file, not a folder" in capsys.readouterr().err


def test_a_session_the_out_folder_refuses_at_the_end_is_kept_in_a_temporary_folder(
    tmp_path, capsys, monkeypatch
):
    """`--out /proc/x` as root passes the check (access() says writable) and the folder cannot
    be made: the run's figures were lost with "could not write the session"."""
    import torchdoctor.reports as reports

    write = reports.write_session
    refused = str(tmp_path / "refused")

    def refusing(session, out, **options):
        if str(out) == refused:
            raise OSError(2, "No such file or directory", refused)
        return write(session, out, **options)

    monkeypatch.setattr(reports, "write_session", refusing)
    script = tmp_path / "train.py"
    script.write_text("import torch\nnet = torch.nn.Linear(2, 1)\n"
                      "for _ in range(4):\n    net(torch.ones(1, 2)).sum().backward()\n")  # fmt: skip
    assert main(["run", "--no-history", "--format", "json", "--out", refused, str(script)]) == 1
    err = capsys.readouterr().err
    assert f"could not write the session to {refused}" in err and "instead" in err
    kept = Path(err.split("written to ")[1].split(" instead")[0]) / "session.json"
    assert json.loads(kept.read_text())["config"]["steps"] >= 1
    shutil.rmtree(kept.parent)
