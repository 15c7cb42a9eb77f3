"""`torchdoctor run` notes a LightningCLI's parsed options while it runs (jsonargparse's parser
never calls argparse's parse_known_args, so none was noted: Lightning's
backbone_image_classifier.py was told CPU bf16 autocast with no `--trainer.precision
bf16-mixed`; clients round 14). The test script's LightningCLI is a stand-in of the same name
(this environment has no jsonargparse): like the real one, it parses in ``__init__`` and runs
the subcommand from there."""

from __future__ import annotations

import textwrap

from tests.syncs.script_options_helpers import SLOW_DATASET, run_for_options

SCRIPT = textwrap.dedent("""\
    import sys, time, torch
    from torch.utils.data import DataLoader, Dataset

    """) + SLOW_DATASET + textwrap.dedent("""\

    class Namespace(dict):
        def as_dict(self):
            return {k: v.as_dict() if isinstance(v, Namespace) else v for k, v in self.items()}

    class LightningCLI:
        def __init__(self, args):
            self.subcommand = args[0]
            fit = Namespace(trainer=Namespace(precision=None, max_steps=12, benchmark=False),
                            data=Namespace(num_workers=0), config=["cfg.yaml"])
            self.config = Namespace(fit=fit)
            self.fit(fit)

        def fit(self, cfg):
            net = torch.nn.Linear(8, 1)
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            loader = DataLoader(Slow(), batch_size=4, num_workers=cfg["data"]["num_workers"])
            for i, (x, y) in enumerate(loader):
                opt.zero_grad()
                torch.nn.functional.mse_loss(net(x), y).backward()
                opt.step()
                if i + 1 >= cfg["trainer"]["max_steps"]:
                    break

    if __name__ == "__main__":
        LightningCLI(sys.argv[1:])
""")


def test_a_lightning_cli_s_parsed_options_are_noted_and_named(tmp_path, capsys):
    session, options = run_for_options(tmp_path, capsys, SCRIPT, "fit", "--trainer.max_steps=12",
                                       name="main.py")  # fmt: skip
    assert options["trainer.max_steps"]["given"] is True
    assert options["trainer.precision"]["value"] is None
    assert options["trainer.precision"]["flags"] == ["--trainer.precision"]
    assert options["trainer.benchmark"]["form"] == "--name=value"  # (--trainer.benchmark=true)
    assert "config" not in options  # (the config files given: no knob)
    (data,) = [a for a in session["advice"] if a["rule"] == "data-loading"]
    assert data["fix"].startswith(
        "This script's own option for it: `--data.num_workers` (0 in this run)."
    )
