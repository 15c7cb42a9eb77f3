"""`torchdoctor run` notes the options of Hydra, click, typer and fire scripts while they run
(none can be read after the script), and the advice names the override or flag its fix
turns."""

from __future__ import annotations

import textwrap

from tests.syncs.script_options_helpers import SLOW_DATASET, run_for_options
from torchdoctor.collect.script_options import (
    note_running_options,
    script_options,
    watching_options,
)

#: a loop whose batches wait on a slow dataset: the data-loading advice, whose remedy is the
#: number of workers
LOOP = SLOW_DATASET + """
def train(workers, steps):
    net = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for i, (x, y) in enumerate(DataLoader(Slow(), batch_size=4, num_workers=workers)):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        if i + 1 >= steps:
            break
"""

HYDRA_SCRIPT = "import time, torch, hydra\nfrom torch.utils.data import DataLoader, Dataset\n" + LOOP + (
    textwrap.dedent("""\

    @hydra.main(version_base=None, config_path="conf", config_name="config")
    def run(cfg):
        train(cfg.data.num_workers, cfg.steps)

    if __name__ == "__main__":
        run()
    """)
)

HYDRA_CONFIG = textwrap.dedent("""\
    steps: 4
    data:
      _target_: project.DataModule
      num_workers: 0
      data_dir: ${oc.env:HOME}
    model:
      compile: false
      optimizer:
        lr: 0.001
    trainer:
      _target_: lightning.pytorch.trainer.Trainer
      max_epochs: 1
""")


def test_a_hydra_jobs_composed_config_and_overrides_are_noted(tmp_path, capsys):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(HYDRA_CONFIG)
    session, options = run_for_options(tmp_path, capsys, HYDRA_SCRIPT, "steps=12",
                            f"hydra.run.dir={tmp_path / 'job'}", "hydra/job_logging=disabled",
                            "hydra/hydra_logging=disabled")  # fmt: skip
    assert options["steps"] == {"flags": ["steps"], "dest": "steps", "value": 12, "default": None,
                                "given": True, "switch": False, "form": "key=value"}  # fmt: skip
    assert options["data.num_workers"]["value"] == 0
    assert options["data.num_workers"]["given"] is False
    assert options["model.compile"]["switch"] is True
    assert options["model.optimizer.lr"]["value"] == 0.001
    assert options["trainer.precision"]["absent"] is True  # (a Lightning Trainer node lacks it)
    assert "data.data_dir" not in options  # (an interpolation: no value of its own)
    assert not any(dest.endswith("_target_") for dest in options)
    assert not {"cfg", "multirun", "config_name"} & set(options)  # (Hydra's own flags)
    (data,) = [a for a in session["advice"] if a["rule"] == "data-loading"]
    assert data["fix"].startswith(
        "This script's own option for it: `data.num_workers=...` (0 in this run)."
    )


CLICK_SCRIPT = "import time, torch, click\nfrom torch.utils.data import DataLoader, Dataset\n" + LOOP + (
    textwrap.dedent("""\

    @click.command()
    @click.option("-j", "--workers", type=int, default=0)
    @click.option("--amp/--no-amp", default=False)
    @click.option("--compile", "use_compile", is_flag=True)
    @click.option("--steps", type=int, default=4)
    def cli(workers, amp, use_compile, steps):
        train(workers, steps)

    if __name__ == "__main__":
        cli()
    """)
)


def test_a_click_commands_options_are_noted(tmp_path, capsys):
    session, options = run_for_options(tmp_path, capsys, CLICK_SCRIPT, "--steps", "12")
    assert set(options) == {"workers", "amp", "use_compile", "steps"}  # (--help is no knob)
    assert options["workers"]["flags"] == ["--workers"] and options["workers"]["given"] is False
    assert options["steps"]["value"] == 12 and options["steps"]["given"] is True
    assert options["amp"]["flags"] == ["--amp", "--no-amp"] and options["amp"]["sets"] == "either"
    assert options["use_compile"]["flags"] == ["--compile"]
    assert options["use_compile"]["sets"] is True and options["use_compile"]["value"] is False
    (data,) = [a for a in session["advice"] if a["rule"] == "data-loading"]
    assert data["fix"].startswith("This script's own option for it: `--workers` (0 in this run).")


def test_running_options_are_looked_for_until_found_and_then_once():
    import click

    seen = []

    @click.command()
    @click.option("--workers", type=int, default=3)
    def cli(workers):
        note_running_options()
        seen.append([o["value"] for o in script_options()])

    with watching_options():
        note_running_options()  # (outside the command: nothing yet, looked for again)
        cli.main(["--workers", "5"], standalone_mode=False)
        cli.main(["--workers", "7"], standalone_mode=False)  # (found already: not again)
    assert seen == [[5], [5]]


FIRE_SCRIPT = "import time, torch, fire\nfrom torch.utils.data import DataLoader, Dataset\n" + LOOP + (
    textwrap.dedent("""\

    def finetune(data_path: str = "x.json", num_workers: int = 0, compile: bool = False,
                 steps: int = 4):
        train(num_workers, steps)

    if __name__ == "__main__":
        fire.Fire(finetune)
    """)
)


def test_the_arguments_of_the_function_fire_called_are_noted(tmp_path, capsys):
    """alpaca-lora's finetune.py: `fire.Fire(train)`, `--micro_batch_size 4`."""
    session, options = run_for_options(tmp_path, capsys, FIRE_SCRIPT, "--steps", "12")
    assert set(options) == {"data_path", "num_workers", "compile", "steps"}
    assert options["steps"]["value"] == 12 and options["steps"]["given"] is True
    assert options["num_workers"]["given"] is False
    assert options["compile"]["flags"] == ["--compile", "--nocompile"]
    assert options["compile"]["sets"] == "either" and options["compile"]["value"] is False
    (data,) = [a for a in session["advice"] if a["rule"] == "data-loading"]
    assert data["fix"].startswith(
        "This script's own option for it: `--num_workers` (0 in this run)."
    )


def test_a_typer_commands_options_are_noted(tmp_path, capsys):
    """typer (>= 0.16 carries its own copy of click, typer._click): its context is its own."""
    typer_script = ("import time, torch, typer\nfrom torch.utils.data import DataLoader, Dataset\n"
                      + LOOP + textwrap.dedent("""\

        app = typer.Typer()

        @app.command()
        def main(num_workers: int = 0, steps: int = 4, compile: bool = False):
            train(num_workers, steps)

        if __name__ == "__main__":
            app()
        """))  # fmt: skip
    session, options = run_for_options(tmp_path, capsys, typer_script, "--steps", "12")
    assert set(options) == {"num_workers", "steps", "compile"}  # (not typer's --install-completion)
    assert options["steps"]["value"] == 12 and options["steps"]["given"] is True
    assert options["num_workers"]["flags"] == ["--num-workers"]
    assert options["compile"]["flags"] == ["--compile", "--no-compile"]
    assert options["compile"]["sets"] == "either"
    (data,) = [a for a in session["advice"] if a["rule"] == "data-loading"]
    assert data["fix"].startswith("This script's own option for it: `--num-workers` (0 in this")
