"""`torchdoctor run` notes the options of a yacs-configured script (``cfg.merge_from_list(
args.opts)``: ``KEY VALUE`` pairs after the flags, the config a local of ``main``, as
deep-person-reid's ``scripts/main.py`` has it) and of an absl one (``flags.DEFINE_integer``,
``app.run(main)``: ``--num_workers=4``), and the advice names the one its fix turns in the
script's own syntax (clients round 15: neither was read, so their loader advice named no
option)."""

from __future__ import annotations

import textwrap

import pytest

from tests.syncs.script_options_helpers import SLOW_DATASET, run_for_options

YACS = textwrap.dedent("""\
    import argparse, time, torch
    from torch.utils.data import DataLoader, Dataset
    from yacs.config import CfgNode as CN

""") + SLOW_DATASET + textwrap.dedent("""\

    def get_default_config():
        cfg = CN()
        cfg.data = CN()
        cfg.data.workers = 0
        cfg.data.sources = ['market1501']
        cfg.train = CN()
        cfg.train.max_iters = 4
        cfg.train.amp = False
        return cfg

    def train(cfg):
        net = torch.nn.Linear(8, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loader = DataLoader(Slow(), batch_size=4, num_workers=cfg.data.workers)
        for i, (x, y) in enumerate(loader):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
            if i + 1 >= cfg.train.max_iters:
                break

    def main():
        parser = argparse.ArgumentParser()
        parser.add_argument('--config-file', type=str, default='')
        parser.add_argument('opts', default=None, nargs=argparse.REMAINDER)
        args = parser.parse_args()
        cfg = get_default_config()
        cfg.merge_from_list(args.opts)
        train(cfg)

    if __name__ == "__main__":
        main()
""")

ABSL = textwrap.dedent("""\
    import time, torch
    from absl import app, flags
    from torch.utils.data import DataLoader, Dataset

    flags.DEFINE_integer("num_workers", 0, "workers of the DataLoader")
    flags.DEFINE_integer("total_steps", 4, "steps")
    flags.DEFINE_bool("parallel", False, "DataParallel")
    FLAGS = flags.FLAGS

""") + SLOW_DATASET + textwrap.dedent("""\

    def train(argv):
        net = torch.nn.Linear(8, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loader = DataLoader(Slow(), batch_size=4, num_workers=FLAGS.num_workers)
        for i, (x, y) in enumerate(loader):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
            if i + 1 >= FLAGS.total_steps:
                break

    if __name__ == "__main__":
        app.run(train)
""")


def test_a_yacs_configs_keys_are_noted_and_named_as_key_value_pairs(tmp_path, capsys):
    session, options = run_for_options(tmp_path, capsys, YACS, "train.max_iters", "12",
                                       name="main.py")  # fmt: skip
    assert options["train.max_iters"]["value"] == 12
    assert options["train.max_iters"]["given"] is True
    assert options["data.workers"] == {
        "flags": ["data.workers"], "dest": "data.workers", "value": 0, "default": None,
        "given": False, "switch": False, "form": "yacs"}  # fmt: skip
    assert options["train.amp"]["switch"] is True
    assert "data.sources" not in options  # (a list: no plain value to give)
    assert "config_file" in options  # (the script's argparse flags are noted as before)
    (data,) = [a for a in session["advice"] if a["rule"] == "data-loading"]
    assert data["fix"].startswith(
        "This script's own option for it: `data.workers ...` after the flags (0 in this run)."
    )


@pytest.fixture
def absl_flags_restored():
    """absl's FLAGS is one object per process: the script's flags and their parsed state would
    stay for every later test (the doctests of absl_options saw `--total_steps` there)."""
    from absl import flags

    before, parsed = set(flags.FLAGS), flags.FLAGS.is_parsed()
    yield
    for name in set(flags.FLAGS) - before:  # (the script's own; absl's logging flags stay)
        if not str(flags.FLAGS.find_module_defining_flag(name, "")).startswith("absl"):
            delattr(flags.FLAGS, name)
    if not parsed:
        flags.FLAGS.unparse_flags()


def test_an_absl_scripts_flags_are_noted_and_named_as_long_flags(tmp_path, capsys,
                                                                 absl_flags_restored):
    session, options = run_for_options(tmp_path, capsys, ABSL, "--total_steps=12",
                                       "--noparallel")  # fmt: skip
    assert options["total_steps"]["value"] == 12
    assert options["total_steps"]["given"] is True
    assert options["num_workers"] == {
        "flags": ["--num_workers"], "dest": "num_workers", "value": 0, "default": 0,
        "given": False, "switch": False, "form": "--name=value"}  # fmt: skip
    assert options["parallel"]["flags"] == ["--parallel", "--noparallel"]
    assert options["parallel"]["given"] is True
    assert not any(name in options for name in ("verbosity", "logtostderr", "only_check_args"))
    (data,) = [a for a in session["advice"] if a["rule"] == "data-loading"]
    assert data["fix"].startswith(
        "This script's own option for it: `--num_workers=...` (0 in this run)."
    )
