"""What a detailed step skips and how the figures stay whole: the lines' backward is hooked in
one collected step of BACKWARD_EVERY (the others carry each line and op's last measured
backward per call), the mode is parked while a library module runs (its calls are the module's
time), and module inputs are compared in one detailed step of FINGERPRINT_EVERY."""

from __future__ import annotations

import pytest
import torch
from hotlines_helpers import lines_at, marked_line
from torch import nn
from torch.overrides import _get_current_function_mode_stack

import torchdoctor
from torchdoctor.collect.lines import BACKWARD_EVERY
from torchdoctor.collect.lines import _Mode as LineMode
from torchdoctor.collect.schedule import FINGERPRINT_EVERY, LINES_EVERY


def _lines_on_stack() -> bool:
    return any(type(mode) is LineMode for mode in _get_current_function_mode_stack())


class Scaled(nn.Module):
    """A user module: its torch calls are lines of this file."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(8))
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(_lines_on_stack())
        return torch.tanh(x * self.weight)  # USER


def test_line_backward_is_hooked_in_one_step_of_four_and_carried_in_the_others():
    model = Scaled()
    x = torch.randn(4, 8)
    hooked = []
    steps = 2 * BACKWARD_EVERY * LINES_EVERY  # lines are timed in one detailed step of 2
    with torchdoctor.Profiler(model, syncs=False, detail="always") as prof:
        for _ in range(steps):
            y = model(x)
            loss = (y * y).sum()  # LOSS
            hooked.append(prof._lines.hooked)
            loss.backward()
            prof.step()
    cycle = BACKWARD_EVERY * LINES_EVERY  # (one timed step of BACKWARD_EVERY hooks)
    assert [n > 0 for n in hooked] == [i % cycle == 0 for i in range(steps)]
    section = prof.session["hot_lines"]
    # (of the tree's steps: one stalled by a loaded host is left out as an outlier)
    assert steps - 2 <= section["detailed_steps"] <= steps
    assert abs(section["steps"] - section["detailed_steps"] / LINES_EVERY) <= 1
    assert section["steps"] - 2 <= section["backward_carried_steps"] < section["steps"]
    assert any("measured by graph hooks in" in note for note in section["notes"])
    here = marked_line(test_line_backward_is_hooked_in_one_step_of_four_and_carried_in_the_others, "LOSS")
    (loss,) = lines_at(prof.session, __file__, here)
    assert loss["backward_ms"]["min"] > 0  # every step has the line's backward, measured or carried


def test_the_mode_is_parked_inside_a_library_module_and_back_in_a_user_module_within_it():
    user = Scaled()
    model = nn.Sequential(nn.Linear(8, 8), user)  # Sequential: library; Scaled: the user's
    with torchdoctor.Profiler(model, syncs=False, detail="always") as prof:
        for _ in range(3):
            model(torch.randn(2, 8)).sum().backward()
            prof.step()
    # a user module inside a library container: timed lines (in the steps that time them)
    assert user.seen == [i % LINES_EVERY == 0 for i in range(3)]
    (line,) = lines_at(prof.session, __file__, marked_line(Scaled.forward, "USER"))
    assert line["torch_calls_per_step"] == pytest.approx(2)  # mul and tanh
    assert not _lines_on_stack()


def test_library_modules_run_without_the_mode_and_their_calls_are_not_seen():
    model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)) for _ in range(4)])
    inside: list[bool] = []
    hook = model[0][1].register_forward_pre_hook(lambda m, a: inside.append(_lines_on_stack()))
    x = torch.randn(2, 8)
    with torchdoctor.Profiler(model, syncs=False, detail="always") as prof:
        for _ in range(3):
            model(x).sum()  # OUTSIDE
            prof.step()
    hook.remove()
    assert inside == [False] * 3
    # 8 library calls per step (4 F.linear, 4 F.layer_norm) would each be dispatched to the mode
    assert prof.state.line_calls_seen / prof.state.line_steps < 4


class Sampler(nn.Module):
    """Re-runs its encoder on unchanged inputs at every denoising step (seed 001)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.decoder = nn.Linear(8, 8)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(obs)
        for _ in range(4):
            x = self.decoder(x + self.encoder(obs))
        return x


def test_inputs_are_compared_in_one_detailed_step_of_four_and_recomputation_counts_those():
    model = Sampler()
    obs = torch.randn(2, 8)
    steps = 2 * FINGERPRINT_EVERY + 1
    with torchdoctor.Profiler(model, syncs=False, detail="always", warmup=1) as prof:
        for _ in range(steps + 1):
            model(obs).sum().backward()
            prof.step()
    flags = [s["fingerprinted"] for s in prof.state.summaries]
    assert flags == [True, False, False, False] * 2 + [True]
    (record,) = [r for r in prof.session["recomputation"] if r["path"] == "encoder"]
    assert record["calls_per_step"] == 4.0
    assert record["identical_input_calls"] == 3.0  # per compared step, not diluted by the others


class Recurrent(nn.Module):
    """A loop in a layer's forward; the model holds two such layers (two owners of one line)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((64,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(x[:, 0])
        for t in range(x.shape[1]):
            h = h * self.weight + x[:, t]  # SCAN
        return h.unsqueeze(1).expand_as(x)


def test_a_lines_carried_backward_is_shared_by_its_owners():
    """mamba.py's scan line in two layers: in the steps that hook nothing, the carried
    backward went to the owner of the line's last call (layer 1: 139 ms, layer 0: 0)."""
    model = nn.Sequential(Recurrent(), Recurrent())
    x = torch.randn(8, 16, 64, requires_grad=True)
    with torchdoctor.Profiler(model, syncs=False, detail="always") as prof:
        for _ in range(2 * BACKWARD_EVERY):
            model(x).sum().backward()
            prof.step()
    here = marked_line(Recurrent.forward, "SCAN")
    rows = {r["owner"]: r for r in lines_at(prof.session, __file__, here)}
    assert set(rows) == {"0", "1"}
    for row in rows.values():  # every step carries a backward for each owner
        assert row["backward_ms"]["min"] > 0, row["owner"]
    first, second = (rows[o]["backward_ms"]["median"] for o in ("0", "1"))
    assert 0.25 < first / second < 4.0  # the same loop: comparable, not all on one owner
