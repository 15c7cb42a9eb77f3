"""Syncs made by torch's own Python code for the user's line: the audit names the torch
function (``inside``), and the torch-syncs rule gives each known one its switch."""

from __future__ import annotations

import torch
from torch.distributions import Categorical, Normal

import torchdoctor
from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.syncs import host_syncs
from torchdoctor.analyze.advice.torch_syncs import torch_syncs


def _step(enc, pol, opt, scaler):
    # (validate_args=True: the default follows __debug__ and a global other code may change)
    x = torch.randn(8, 6)
    mu, logstd = enc(x).chunk(2, dim=-1)
    q = Normal(mu, logstd.exp(), validate_args=True)  # validates its arguments
    z = q.rsample()
    Categorical(logits=pol(x), validate_args=True).sample()  # validates its logits
    loss = -q.log_prob(z).sum() + z.pow(2).mean()  # log_prob validates the sample
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(opt)  # reads found_inf
    scaler.update()
    torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0, error_if_nonfinite=True)
    loss.item()  # the user's own read: no torch function in between


def test_the_audit_names_the_torch_function_and_the_rule_its_switch():
    torch.manual_seed(0)
    enc, pol = torch.nn.Linear(6, 4), torch.nn.Linear(6, 3)
    opt = torch.optim.SGD([*enc.parameters(), *pol.parameters()], lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    with torchdoctor.Profiler(warmup=0) as prof:
        for _ in range(4):
            _step(enc, pol, opt, scaler)
            prof.step()
    session = prof.session
    inside = {(r["kind"], r.get("inside")) for r in session["syncs"]}
    assert ("bool", "distributions/distribution.py:__init__") in inside
    assert ("bool", "distributions/distribution.py:_validate_sample") in inside
    assert any(str(where).startswith("amp/grad_scaler.py") for _, where in inside)
    assert any(str(where).startswith("nn/utils/clip_grad.py") for _, where in inside)
    assert ("item", None) in inside  # loss.item() is the user's own
    found = {a.title.split(":")[0]: a for a in torch_syncs(session)}
    fixes = {title: a.fix for title, a in found.items()}
    # the checks' own cost, measured apart (suite 'fused'), on the lines' measured time
    checks = found["torch.distributions checks its arguments and samples on the host"]
    assert checks.estimated_saving_ms > 0
    assert checks.saving_range_ms[1] > checks.saving_range_ms[0]
    assert any(e.startswith("measured: those lines take") for e in checks.evidence)
    assert (
        "set_default_validate_args(False)"
        in fixes["torch.distributions checks its arguments and samples on the host"]
    )
    assert (
        "error_if_nonfinite=False"
        in fixes["clip_grad_norm_(error_if_nonfinite=True) tests the norm on the host"]
    )
    # the generic rule keeps only the user's own read
    (generic,) = host_syncs(session)
    assert any("loss.item()" in e for e in generic.evidence)
    assert not any("Normal(" in e or "clip_grad" in e for e in generic.evidence)
    # ranked: each known sync's switch survives merging with its hot line
    titles = " | ".join(a.title for a in advise(session))
    assert "set_default_validate_args" not in titles  # (in the fix, not the title)
    assert "torch.distributions checks its arguments" in titles


def test_bf16_autocast_is_told_to_drop_the_grad_scaler():
    rec = {"kind": "item", "op": "scaler.step(opt)", "file": "/me/t.py", "line": 7,
           "per_step": 1.0, "phase": "optimizer", "inside": "amp/grad_scaler.py:<genexpr>"}  # fmt: skip
    plain = torch_syncs({"syncs": [rec]})[0]
    assert "price of loss scaling" in plain.fix
    bf16 = {"syncs": [rec], "environment": {"knobs": {"autocast_dtype": "bfloat16"}}}
    assert "drop the GradScaler" in torch_syncs(bf16)[0].fix


def test_the_session_records_the_autocast_dtype():
    net = torch.nn.Linear(4, 4)
    with torchdoctor.Profiler(net, syncs=False, warmup=0) as prof:
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                net(torch.randn(2, 4)).float().sum().backward()
            prof.step()
    knobs = prof.session["environment"]["knobs"]
    assert knobs["autocast"] is True and knobs["autocast_dtype"] == "bfloat16"


def test_an_averaged_model_s_counter_reads_are_named_with_a_sync_free_ema():
    """AveragedModel.update_parameters branches on its n_averaged tensor twice per call: the
    reads are the library's, told with the hand-written EMA that makes none."""
    from torch.optim.swa_utils import AveragedModel

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    ema = AveragedModel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(warmup=0) as prof:
        for _ in range(4):
            net(torch.randn(3, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
            ema.update_parameters(net)  # the EMA's line
            prof.step()
    session = prof.session
    (record,) = [r for r in session["syncs"] if str(r.get("inside", "")).endswith("update_parameters")]
    assert record["per_step"] == 2
    (item,) = torch_syncs(session)
    assert "AveragedModel.update_parameters" in item.title and "_foreach_lerp_" in item.fix
