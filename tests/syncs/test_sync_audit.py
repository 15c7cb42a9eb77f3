"""The sync audit: each kind at the right line, backward, torch-internal syncs, no false positives."""

from __future__ import annotations

import inspect

import pytest
import torch

import torchdoctor
from torchdoctor.collect.syncs import sync_audit


def _line(func, marker: str = "# sync") -> int:
    lines, start = inspect.getsourcelines(func)
    hits = [start + i for i, text in enumerate(lines) if marker in text]
    assert len(hits) == 1, f"{func.__name__} must mark exactly one line with {marker!r}"
    return hits[0]


def _x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(6)


def s_item(x):
    return x.sum().item()  # sync


def s_tolist(x):
    return x.tolist()  # sync


def s_cpu(x):
    return x.cpu()  # sync


def s_to_cpu(x):
    return x.to("cpu")  # sync


def s_numpy(x):
    return x.numpy()  # sync


def s_bool(x):
    if x.sum() > 0:  # sync
        return 1
    return 0


def s_float(x):
    return float(x[0])  # sync


def s_int(x):
    return int(x[0])  # sync


def s_index(x):
    return [1, 2, 3][torch.tensor(1, device=x.device)]  # sync


def s_format(x):
    return f"{x[0]:.3f}"  # sync


def s_repr(x):
    return repr(x)  # sync


def s_bool_index(x):
    return x[x > 0]  # sync


def s_bool_setitem(x):
    y = torch.stack([x, -x], dim=1)  # (one value, x[mask] = 0, is masked_fill_: no sync)
    y[x > 0] = x[:2]  # sync
    return y


def s_nonzero(x):
    return torch.nonzero(x > 0)  # sync


def s_where(x):
    return torch.where(x > 0)  # sync


def s_unique(x):
    return torch.unique(x.round())  # sync


def s_masked_select(x):
    return torch.masked_select(x, x > 0)  # sync


def s_repeat_interleave(x):
    return torch.repeat_interleave(x, torch.arange(6))  # sync


def s_equal(x):
    return torch.equal(x, x)  # sync


def s_allclose(x):
    return torch.allclose(x, x)  # sync


def s_bincount(x):
    return torch.bincount(torch.tensor([0, 2, 2], device=x.device))  # sync


def s_one_hot(x):
    labels = torch.tensor([0, 2], device=x.device)
    return torch.nn.functional.one_hot(labels)  # sync


def s_contains(x):
    return 0.5 in x  # sync


CASES = [
    (s_item, "item"),
    (s_tolist, "tolist"),
    (s_cpu, "cpu"),
    (s_to_cpu, "cpu"),
    (s_numpy, "numpy"),
    (s_bool, "bool"),
    (s_float, "float"),
    (s_int, "int"),
    (s_index, "index"),
    (s_format, "format"),
    (s_repr, "repr"),
    (s_bool_index, "bool_index"),
    (s_bool_setitem, "bool_setitem"),
    (s_nonzero, "nonzero"),
    (s_where, "nonzero"),
    (s_unique, "unique"),
    (s_masked_select, "masked_select"),
    (s_repeat_interleave, "repeat_interleave"),
    (s_equal, "equal"),
    (s_allclose, "allclose"),
    (s_bincount, "bincount"),
    (s_one_hot, "one_hot"),
    (s_contains, "contains"),
]


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
@pytest.mark.parametrize("func,kind", CASES, ids=[c[0].__name__[2:] for c in CASES])
def test_each_kind_is_found_at_its_line(func, kind, thorough):
    x = _x()
    with sync_audit(thorough=thorough) as audit:
        for _ in range(2):
            func(x)
    records = audit.records()
    assert [(r["kind"], r["line"], r["count"]) for r in records] == [(kind, _line(func), 2)]
    record = records[0]
    assert record["file"] == __file__
    assert record["function"] == func.__name__
    assert "# sync" in record["op"]
    assert record["would_sync_on_cuda"] is True and record["stall_ms"] is None
    assert record["per_step"] == 2.0  # no profiler: the whole audit is one step


class _ItemInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        scale = grad.abs().max().item()  # sync
        return grad * 2 + 0 * scale


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_sync_in_custom_backward_is_found_with_phase_backward(thorough):
    x = _x().requires_grad_()
    with sync_audit(thorough=thorough) as audit:
        _ItemInBackward.apply(x).sum().backward()
        torch.autograd.grad(_ItemInBackward.apply(x).sum(), x)
    records = audit.records()
    expected = _line(_ItemInBackward.backward)
    assert [(r["kind"], r["line"], r["phase"], r["count"]) for r in records] == [
        ("item", expected, "backward", 2)
    ]


def _clip(params):
    return torch.nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)  # sync


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_sync_inside_torch_code_is_attributed_to_the_calling_user_line(thorough):
    net = torch.nn.Linear(4, 2)
    net(torch.randn(3, 4)).sum().backward()
    with sync_audit(thorough=thorough) as audit:
        _clip(net.parameters())
    records = audit.records()
    assert [(r["line"], r["function"]) for r in records] == [(_line(_clip), "_clip")]
    assert records[0]["kind"] in ("bool", "item")


def _arange(n):
    return torch.arange(n)  # sync


def test_thorough_sees_syncs_in_cxx_argument_parsing_that_fast_mode_cannot():
    n = torch.tensor(5)
    with sync_audit(thorough=True) as audit:
        _arange(n)
    assert [(r["kind"], r["line"]) for r in audit.records()] == [("item", _line(_arange))]
    with sync_audit() as fast:
        _arange(n)
    assert fast.records() == []


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )


def _clean_step(net, opt, x, target, device):
    opt.zero_grad()
    x = x.to(device)  # CPU-to-CPU .to(): no sync on a CPU run, no sync on CUDA either
    h = net(x.to(torch.float32))
    h = torch.where(h > 0, h, h * 0.1)  # three-argument where: no sync
    h[h.detach() < -1] = 0.0  # one value through a mask: masked_fill_, no nonzero, no sync
    h[h.detach() > 1e3] = torch.tensor(1e3)  # a one-element host tensor: the same
    h = h[:, :3] + h[torch.tensor([0, 1, 2, 3, 4])][:, 1:]
    loss = torch.nn.functional.mse_loss(h, target)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        h.add_(1).mul_(0.5).clamp_(min=0)
    return loss.detach()


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_no_false_positives_on_a_clean_step(thorough, optimizer):
    net = _model()
    opt = (
        torch.optim.Adam(net.parameters(), 1e-3)
        if optimizer == "adam"
        else torch.optim.SGD(net.parameters(), 0.1, momentum=0.9)
    )
    x, target = torch.randn(5, 8), torch.randn(5, 3)
    device = torch.device("cpu")
    with sync_audit(thorough=thorough) as audit:
        for _ in range(2):
            _clean_step(net, opt, x, target, device)
    assert audit.records() == []


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_numerics_are_unchanged(thorough):
    def run(audited: bool):
        net = _model()
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        torch.manual_seed(1)
        x, target = torch.randn(5, 8), torch.randn(5, 3)
        losses = []
        if audited:
            audit = sync_audit(thorough=thorough)
            audit.__enter__()
        try:
            for _ in range(3):
                losses.append(_clean_step(net, opt, x, target, "cpu"))
                losses.append(torch.tensor(s_item(x)))
        finally:
            if audited:
                audit.__exit__(None, None, None)
        return losses, [p.detach().clone() for p in net.parameters()]

    (plain_losses, plain_params), (audited_losses, audited_params) = run(False), run(True)
    assert all(torch.equal(a, b) for a, b in zip(plain_losses, audited_losses))
    assert all(torch.equal(a, b) for a, b in zip(plain_params, audited_params))


def _two_kinds(x):
    return x.detach().cpu().numpy()  # sync


def test_host_copy_then_numpy_on_one_line_counts_once():
    x = _x()
    with sync_audit() as audit:
        _two_kinds(x)
    assert [r["kind"] for r in audit.records()] == ["cpu"]


def test_modes_hooks_and_patches_are_removed_even_when_the_block_raises():
    before = torch.optim.Optimizer.zero_grad
    for thorough in (False, True):
        with pytest.raises(ZeroDivisionError):
            with sync_audit(thorough=thorough):
                _x().sum().item()
                raise ZeroDivisionError
        assert torch._C._len_torch_function_stack() == 0
        assert torch.optim.Optimizer.zero_grad is before
        with sync_audit() as audit:
            pass
        assert audit.records() == []


def test_public_export_summary_and_table():
    assert torchdoctor.sync_audit is sync_audit
    with pytest.raises(TypeError, match="thorough must be True or False"):
        sync_audit(thorough="yes")
    x = _x()
    with sync_audit() as audit:
        s_item(x)
    summary = audit.summary()
    assert summary["mode"] == "fast" and summary["device"] == "cpu"
    assert summary["intercepted_calls"] >= 2 and summary["overhead_pct"] >= 0
    text = str(audit)
    assert f"test_sync_audit.py:{_line(s_item)}" in text and "(would sync on CUDA)" in text


class _Reads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.linear(x)
        self.peak = y.abs().max().item()  # sync
        return y


def test_profiler_puts_audit_records_with_phase_and_per_step_in_the_session():
    from torchdoctor.collect.profiler import Profiler

    torch.manual_seed(0)
    net = _Reads()
    opt = torch.optim.SGD(net.parameters(), 0.1)
    with Profiler(net, warmup=1, step_boundary="auto", memory=False) as prof:
        for _ in range(4):
            opt.zero_grad()
            net(torch.randn(3, 4)).sum().backward()
            opt.step()
    session = prof.session
    assert session["config"]["syncs"] is True and session["sync_audit"]["mode"] == "fast"
    assert [(r["line"], r["phase"], r["per_step"]) for r in session["syncs"]] == [
        (_line(_Reads.forward), "forward", 1.0)
    ]
