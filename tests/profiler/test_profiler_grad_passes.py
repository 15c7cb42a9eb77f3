"""torch.autograd.grad passes by the user line that starts them: a Jacobian regulariser's
row-by-row passes are named at its line and cured with vectorize=True; a vectorized Jacobian
and a plain backward() are none."""

import torch
from torch import nn
from torch.autograd.functional import jacobian

import torchdoctor
from torchdoctor.analyze.advice import advise


def _regularised(vectorize, steps=10, outputs=12):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(outputs, 64), nn.Tanh(), nn.Linear(64, outputs))
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    with torchdoctor.Profiler(syncs=False, detail="always") as prof:
        for _ in range(steps):
            x = torch.randn(outputs)
            J = jacobian(net, x, create_graph=True, vectorize=vectorize)  # the Jacobian's line
            loss = net(x).pow(2).mean() + 1e-3 * J.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            prof.step()
    return prof.session.to_dict()


def test_a_jacobian_built_row_by_row_is_named_at_its_line_with_its_cure():
    session = _regularised(vectorize=False)
    (row,) = session["grad_passes"]
    assert "the Jacobian's line" in row["code"] and row["passes_per_step"] == 12
    assert 0 < row["ms_per_step"] < session["step_ms"]["max"]
    found = [a for a in advise(session) if a.rule == "grad-passes"]
    assert found and "12 gradient passes per step" in found[0].title
    assert "vectorize=True" in found[0].fix and found[0].estimated_saving_ms > 0


def test_a_vectorized_jacobian_and_a_plain_backward_are_no_loop_of_passes():
    session = _regularised(vectorize=True)
    assert all(row["passes_per_step"] <= 1 for row in session.get("grad_passes") or ())
    assert not [a for a in advise(session) if a.rule == "grad-passes"]
    net = nn.Linear(4, 1)
    with torchdoctor.Profiler(syncs=False, detail="always") as prof:
        for _ in range(4):
            net(torch.randn(2, 4)).sum().backward()
            prof.step()
    assert "grad_passes" not in prof.session.to_dict()


def test_a_losss_derivatives_taken_in_forward_keep_the_forward_phase():
    """A PINN's residual: u_x by torch.autograd.grad(create_graph=True), then more forward
    work. After the pass the phase fell back to 'other', and the residual's lines read as work
    between steps; a grad pass without create_graph (a manual update's) still ends forward."""
    from torchdoctor.collect.phases import PhaseMachine

    seen = []
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    with torchdoctor.Profiler(syncs=False, detail="always", hot_lines=False) as prof:
        for _ in range(4):
            x = torch.rand(64, 2, requires_grad=True)
            u = net(x)
            (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
            seen.append(prof._rec.phases.phase)  # (the residual's next line)
            loss = (du[:, :1] + u).pow(2).mean()
            grads = torch.autograd.grad(loss, list(net.parameters()))
            seen.append(prof._rec.phases.phase)  # (after the step's own gradients)
            with torch.no_grad():
                for p, g in zip(net.parameters(), grads):
                    p -= 1e-3 * g
            opt.step()
            prof.step()
    assert seen[:2] == ["forward", "other"] and isinstance(prof._rec.phases, PhaseMachine)
