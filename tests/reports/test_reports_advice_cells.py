"""A recurrent cell of the user's own (karpathy/makemore's ``GRUCell``: three Linear gates and
their elementwise ops) called once per time step from a Python loop is told to run the
sequence with nn.GRU / nn.LSTM, with the saving of the measured pair (suite 'fused'), not to
wrap regions inside it (its hot lines already show inside)."""

import inspect

import torch
import torch.nn.functional as F
from torch import nn

import torchdoctor
from torchdoctor.analyze.advice.base import SPEEDUPS, saving_step_ms
from torchdoctor.analyze.advice.dominant import dominant_module


class GRUCell(nn.Module):  # makemore's, smaller
    def __init__(self, n):
        super().__init__()
        self.xh_to_z = nn.Linear(2 * n, n)
        self.xh_to_r = nn.Linear(2 * n, n)
        self.xh_to_hbar = nn.Linear(2 * n, n)

    def forward(self, xt, hprev):
        xh = torch.cat([xt, hprev], dim=1)
        r = F.sigmoid(self.xh_to_r(xh))
        hbar = F.tanh(self.xh_to_hbar(torch.cat([xt, r * hprev], dim=1)))
        z = F.sigmoid(self.xh_to_z(xh))
        return (1 - z) * hprev + z * hbar


class RNN(nn.Module):
    def __init__(self, n=32, vocab=27):
        super().__init__()
        self.wte = nn.Embedding(vocab, n)
        self.cell = GRUCell(n)
        self.lm_head = nn.Linear(n, vocab)

    def forward(self, idx):
        emb = self.wte(idx)
        h = emb.new_zeros(idx.shape[0], emb.shape[-1])
        hiddens = []
        for i in range(idx.shape[1]):
            h = self.cell(emb[:, i], h)
            hiddens.append(h)
        return self.lm_head(torch.stack(hiddens, 1))


def test_a_hand_written_gru_cell_called_per_time_step_is_told_to_run_the_sequence():
    model = RNN()
    optimizer = torch.optim.AdamW(model.parameters())
    idx = torch.randint(0, 27, (16, 16))

    def step():
        loss = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    session = torchdoctor.profile(step, steps=3, warmup=1, syncs=False)
    (item,) = [a for a in dominant_module(session) if a.title.startswith("cell ")]
    assert "a recurrent cell of your own called once per time step" in item.title
    assert "nn.GRU" in item.fix and "torchdoctor.region" not in item.fix
    cell = next(c for c in session["tree"]["children"][0]["children"] if c["name"] == "cell")
    share = (cell["total_ms"]["mean"]) / session["step_ms"]["mean"]
    # of the step without the profiler: the detailed step less the profiler's own cost in it
    unprofiled = saving_step_ms(session)
    assert unprofiled < session["step_ms"]["mean"]
    expected = unprofiled * share * (1 - 1 / SPEEDUPS["cell_by_hand"].low)
    assert abs(item.estimated_saving_ms - expected) < 0.05 * expected


def _node(path, type_, ms, calls=1.0, children=()):
    return {"kind": "module", "path": path, "name": path.rsplit(".", 1)[-1], "type": type_,
            "calls_per_step": calls, "total_ms": {"median": ms}, "forward_ms": {"median": ms},
            "children": [*children, {"kind": "self", "total_ms": {"median": 0.0}}]}  # fmt: skip


def test_a_conv_lstm_cell_or_a_cell_called_once_is_not_told_to_use_nn_gru():
    def advice_for(cell):
        tree = {"kind": "root", "path": "", "total_ms": {"median": 100.0}, "children": [cell]}
        (item,) = dominant_module({"step_ms": {"median": 100.0}, "tree": tree})
        return item

    conv_cell = _node("cell", "ConvLSTMCell", 60.0, 16.0, [_node("cell.conv", "Conv2d", 50.0, 16.0)])
    assert "nn.GRU" not in advice_for(conv_cell).title
    once = _node("cell", "GRUCell", 60.0, 1.0, [_node("cell.gate", "Linear", 20.0, 3.0)])
    assert "nn.GRU" not in advice_for(once).title
    looped = _node("cell", "GRUCell", 60.0, 16.0, [_node("cell.gate", "Linear", 20.0, 48.0)])
    assert "a recurrent cell of your own" in advice_for(looped).title


class Mixer(nn.Module):
    """A part whose time is its own lines, no sub-module's: the hot lines show inside it."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(64, 64)

    def forward(self, x):
        h = self.proj(x)
        for _ in range(20):
            h = h + torch.tanh(h).cumsum(dim=-1) * 1e-3  # HEAVY
        return h


def test_a_composite_whose_lines_were_measured_is_told_its_heaviest_line_not_to_add_regions():
    model = nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 64), Mixer())
    x = torch.randn(64, 64)
    session = torchdoctor.profile(lambda: model(x).sum().backward(), steps=3, warmup=1, syncs=False)
    (item,) = [a for a in dominant_module(session) if "3" in a.title.split(" dominates")[0]]
    lines, first = inspect.getsourcelines(Mixer.forward)
    heavy = first + next(i for i, text in enumerate(lines) if "# HEAVY" in text)
    where = f"test_reports_advice_cells.py:{heavy}"
    assert f"start at its heaviest line, {where}" in item.title
    assert "torchdoctor.region" not in item.fix and where in item.fix
    assert any(e.startswith(f"its heaviest measured lines: {where}") for e in item.evidence)
