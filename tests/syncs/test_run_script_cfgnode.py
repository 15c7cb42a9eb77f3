"""`torchdoctor run` notes the keys of a minGPT-style CfgNode config (projects/chargpt:
``config.merge_from_args(sys.argv[1:])`` reads ``--trainer.num_workers=0``), and the advice names
the key its fix turns, in that syntax (clients round 14: chargpt's 4 DataLoader workers were
blamed with no option named)."""

from __future__ import annotations

import textwrap

from tests.syncs.script_options_helpers import SLOW_DATASET, run_for_options

SCRIPT = textwrap.dedent("""\
    import sys, time, torch
    from ast import literal_eval
    from torch.utils.data import DataLoader, Dataset

    class CfgNode:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)
        def to_dict(self):
            return {k: v.to_dict() if isinstance(v, CfgNode) else v for k, v in self.__dict__.items()}
        def merge_from_args(self, args):
            for arg in args:
                key, val = arg.split('=')
                *parents, leaf = key[2:].split('.')
                obj = self
                for k in parents:
                    obj = getattr(obj, k)
                setattr(obj, leaf, literal_eval(val))

""") + SLOW_DATASET + textwrap.dedent("""\

    if __name__ == "__main__":
        config = CfgNode(system=CfgNode(seed=3407),
                         trainer=CfgNode(num_workers=0, max_iters=4, betas=(0.9, 0.95)))
        config.merge_from_args(sys.argv[1:])
        net = torch.nn.Linear(8, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loader = DataLoader(Slow(), batch_size=4, num_workers=config.trainer.num_workers)
        for i, (x, y) in enumerate(loader):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
            if i + 1 >= config.trainer.max_iters:
                break
""")


def test_a_mingpt_cfgnodes_keys_are_noted_and_named_in_its_syntax(tmp_path, capsys):
    session, options = run_for_options(tmp_path, capsys, SCRIPT, "--trainer.max_iters=12",
                                       name="chargpt.py")  # fmt: skip
    assert options["trainer.max_iters"]["value"] == 12
    assert options["trainer.max_iters"]["given"] is True
    assert options["trainer.num_workers"] == {
        "flags": ["--trainer.num_workers"], "dest": "trainer.num_workers", "value": 0,
        "default": None, "given": False, "switch": False, "form": "--name=value"}  # fmt: skip
    assert options["system.seed"]["value"] == 3407
    assert "trainer.betas" not in options  # (a tuple: no plain value to give)
    (data,) = [a for a in session["advice"] if a["rule"] == "data-loading"]
    assert data["fix"].startswith(
        "This script's own option for it: `--trainer.num_workers=...` (0 in this run)."
    )
