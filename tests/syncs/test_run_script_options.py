"""`torchdoctor run` notes the script's own command-line options (argparse, and nanoGPT's
`--name=value` globals), and the advice names the one its fix turns."""

from __future__ import annotations

import argparse
import json
import textwrap

from tests.syncs.script_options_helpers import SLOW_DATASET
from torchdoctor.cli import main
from torchdoctor.collect.script_options import script_options, watching_options

LOADER_SCRIPT = textwrap.dedent("""\
    import argparse, time, torch
    from torch.utils.data import DataLoader, Dataset

    class Parser(argparse.ArgumentParser):  # (a library's subclass: HfArgumentParser)
        pass

    parser = Parser()
    parser.add_argument("-j", "--workers", type=int, default=0)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    """) + SLOW_DATASET + textwrap.dedent("""\

    net = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for i, (x, y) in enumerate(DataLoader(Slow(), batch_size=4, num_workers=args.workers)):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        if i + 1 >= args.steps:
            break
""")


def test_argparse_options_are_in_the_session_and_the_loader_fix_names_workers(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text(LOADER_SCRIPT)
    out = tmp_path / "prof"
    code = main(["run", "--no-history", "--format", "json", "--out", str(out), str(script),
                 "--steps", "12"])  # fmt: skip
    capsys.readouterr()
    assert code == 0
    session = json.loads((out / "session.json").read_text())
    options = {o["dest"]: o for o in session["environment"]["script_options"]}
    assert set(options) == {"workers", "amp", "steps"}  # (-h is no knob)
    assert options["workers"] == {"flags": ["--workers"], "dest": "workers", "value": 0,
                                  "default": 0, "given": False, "switch": False}  # fmt: skip
    assert options["steps"]["value"] == 12 and options["steps"]["given"] is True
    assert options["amp"]["switch"] is True and options["amp"]["sets"] is True
    assert session["config"]["script_command"] == [str(script), "--steps", "12"]  # (tune's)
    (data,) = [a for a in session["advice"] if a["rule"] == "data-loading"]
    assert data["fix"].startswith("This script's own option for it: `--workers` (0 in this run).")


def test_configurator_style_globals_are_noted_after_the_script(tmp_path, capsys):
    """nanoGPT: `exec(open('configurator.py').read())` sets globals from `--name=value`."""
    script = tmp_path / "ng.py"
    script.write_text(textwrap.dedent("""\
        import sys, torch
        compile = True
        batch_size = 8
        eval_interval = 2000
        config_keys = [k for k, v in globals().items()
                       if not k.startswith("_") and isinstance(v, (int, float, bool, str))]
        for arg in sys.argv[1:]:
            key, value = arg[2:].split("=")
            if key in globals():
                globals()[key] = eval(value)
        net = torch.nn.Linear(4, 1)
        for _ in range(3):
            net(torch.randn(batch_size, 4)).sum().backward()
    """))
    out = tmp_path / "prof"
    code = main(["run", "--no-history", "--format", "json", "--out", str(out), str(script),
                 "--compile=False", "--batch_size=4", "--unknown=1"])  # fmt: skip
    capsys.readouterr()
    assert code == 0
    options = json.loads((out / "session.json").read_text())["environment"]["script_options"]
    assert [(o["flags"], o["value"], o["switch"], o["given"]) for o in options] == [
        (["--compile"], False, True, True), (["--batch_size"], 4, False, True),
        (["--eval_interval"], 2000, False, False)]  # (listed in config_keys, not given)
    assert {o["form"] for o in options} == {"--name=value"}


def test_a_failed_parse_notes_nothing_and_watching_ends_with_the_block():
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--workers", type=int)
    original = argparse.ArgumentParser.parse_known_args
    with watching_options():
        try:
            parser.parse_args(["--workers", "x"])
        except argparse.ArgumentError:
            pass
        assert script_options() == []
        parser.parse_known_args(["--workers", "3", "--other"])
        assert [o["value"] for o in script_options()] == [3]
    assert argparse.ArgumentParser.parse_known_args is original
