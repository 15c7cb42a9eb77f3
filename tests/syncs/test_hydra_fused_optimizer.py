"""A Hydra config's torch optimizer node (the lightning-hydra-template's ``model.optimizer``,
``_target_: torch.optim.Adam``, ``_partial_: true``) takes ``fused`` from the command line as
``+model.optimizer.fused=true``: the fused-optimizer advice names that override (clients round
14: it said only "build it with fused=True in the LightningModule's configure_optimizers")."""

from __future__ import annotations

from torchdoctor.analyze.advice.base import Advice
from torchdoctor.analyze.advice.script_terms import in_script_terms
from torchdoctor.collect.script_configs import _flatten, _hydra_entries

CONFIG = {
    "model": {"_target_": "src.models.mnist_module.MNISTLitModule", "compile": False,
              "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001},
              "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
                            "_partial_": True, "mode": "min"}},
    "other": {"_target_": "torch.optim.SGD", "fused": False},
}  # fmt: skip


def _options():
    return {o["dest"]: o for o in _hydra_entries(_flatten(CONFIG), set())}


def test_an_optimizer_node_without_fused_gets_an_absent_fused_switch():
    options = _options()
    assert options["model.optimizer.fused"]["absent"] is True
    assert options["model.optimizer.fused"]["switch"] is True
    assert "model.scheduler.fused" not in options  # (a scheduler has no fused kernel)
    assert options["other.fused"]["value"] is False and "absent" not in options["other.fused"]


def test_the_fused_optimizer_advice_names_the_override():
    session = {"environment": {"script_options": [_options()["model.optimizer.fused"]]}}
    item = Advice(rule="optimizer-step", title="run Adam with fused=True",
                  fix="build it with fused=True.", cause="fused_optimizer")  # fmt: skip
    (told,) = in_script_terms(session, [item])
    assert told.fix == ("This script's own option for it: run with `+model.optimizer.fused=true` "
                        "(unset in this run). build it with fused=True.")  # fmt: skip
    given = {"environment": {"script_options": [_options()["other.fused"]]}}
    (other,) = in_script_terms(given, [Advice(rule="optimizer-step", title="t", fix="F.",
                                              cause="fused_optimizer")])  # fmt: skip
    assert other.fix.startswith("This script's own option for it: run with `other.fused=true`")
