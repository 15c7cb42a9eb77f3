"""Backward of modules called once per time step (RNN cells): sibling calls interleave in the
backward pass (lstm2 at t, lstm1 at t, lstm2 at t-1 ...), so each call is attributed on its
own; the union of one module's calls covered the other's, and pytorch/examples'
time_sequence_prediction put 95% of the cells' backward in their parent's (self) row."""

import torch
from torch import nn

import torchdoctor
from torchdoctor.collect.backward import backward_times
from torchdoctor.collect.records import BackwardMark, MarkKind
from torchdoctor.session_read import walk


class Sequence(nn.Module):  # pytorch/examples time_sequence_prediction's model, smaller
    def __init__(self):
        super().__init__()
        self.lstm1 = nn.LSTMCell(1, 32)
        self.lstm2 = nn.LSTMCell(32, 32)
        self.linear = nn.Linear(32, 1)

    def forward(self, input):
        outputs = []
        h = c = h2 = c2 = torch.zeros(input.size(0), 32)
        for x in input.split(1, dim=1):
            h, c = self.lstm1(x, (h, c))
            h2, c2 = self.lstm2(h, (h2, c2))
            outputs += [self.linear(h2)]
        return torch.cat(outputs, dim=1)


def test_interleaved_calls_of_sibling_leaves_are_cut_call_by_call():
    S, E = MarkKind.START, MarkKind.END
    marks = [  # B at t, A at t, B at t-1, A at t-1: each call's end after the next one starts
        BackwardMark(2, 1, S, 0.0), BackwardMark(2, 1, E, 15.0),
        BackwardMark(1, 2, S, 10.0), BackwardMark(1, 2, E, 35.0),
        BackwardMark(2, 3, S, 20.0), BackwardMark(2, 3, E, 40.0),
        BackwardMark(1, 4, S, 30.0), BackwardMark(1, 4, E, 50.0),
    ]  # fmt: skip
    times = backward_times([-1, 0, 0], marks, (0.0, 60.0))
    assert times == {1: 30.0, 2: 20.0}  # A: 10-20 and 30-50; B: 0-10 and 20-30


def test_rnn_cells_own_their_backward():
    torch.manual_seed(0)
    net = Sequence()
    x = torch.randn(16, 60)
    with torchdoctor.Profiler(net, syncs=False, hot_lines=False, detail="always") as prof:
        for _ in range(3):
            net(x).pow(2).mean().backward()
            prof.step()
    nodes = {n["path"]: n for n, _ in walk(prof.session["tree"])}
    total = nodes["Sequence"]["backward_ms"]["mean"]
    cells = nodes["lstm1"]["backward_ms"]["mean"] + nodes["lstm2"]["backward_ms"]["mean"]
    own = nodes["Sequence.(self)"]["backward_ms"]["mean"]
    assert cells > 0.5 * total and own < 0.25 * total, (cells, own, total)
    assert nodes["lstm1"]["backward_ms"]["mean"] > 0.15 * total
