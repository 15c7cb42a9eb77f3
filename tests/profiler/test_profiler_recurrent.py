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


def test_the_timeline_of_a_long_loop_of_cells_is_bounded_and_says_so(monkeypatch):
    monkeypatch.setattr("torchdoctor.collect.aggregate.MAX_TIMELINE_EVENTS", 50)
    torch.manual_seed(0)
    net = Sequence()
    x = torch.randn(4, 40)  # 120 cell and linear calls a step, their backward spans as many
    with torchdoctor.Profiler(net, syncs=False, hot_lines=False, detail="always") as prof:
        for _ in range(2):
            net(x).pow(2).mean().backward()
            prof.step()
    session = prof.session
    calls = [e for e in session["timeline"] if e["cat"] != "phase"]
    assert len(calls) == 50
    outermost = [e for e in calls if e["depth"] == 1]
    assert {(e["name"], e["cat"]) for e in outermost} == {
        ("Sequence", "forward"), ("Sequence", "backward")}  # every call to the depth that fits
    deeper = [e["ts_us"] for e in calls if e["depth"] > 1]
    forward = next(e for e in outermost if e["cat"] == "forward")
    assert deeper == sorted(deeper) and deeper[-1] < forward["ts_us"] + forward["dur_us"] / 2
    note = [n for n in session["config"]["notes"] if n.startswith("the timeline keeps 50")]
    assert note and "all down to depth 1 of the module tree" in note[0], session["config"]["notes"]


def test_closures_of_lbfgs_compare_inputs_per_backward_pass():
    # LBFGS runs forward and backward up to 20 times a step: each backward pass drops the
    # calls made with grad (their graph is consumed), the evaluation calls without grad stay
    torch.manual_seed(0)
    net = Sequence()
    x, y = torch.randn(4, 12), torch.randn(4, 12)
    opt = torch.optim.LBFGS(net.parameters(), lr=0.1, max_iter=4)

    def closure():
        opt.zero_grad()
        loss = (net(x) - y).pow(2).mean()
        loss.backward()
        return loss

    with torchdoctor.Profiler(net, syncs=False, hot_lines=False, detail="always",
                              step_boundary="auto") as prof:  # fmt: skip
        for _ in range(8):  # (inputs are compared in one detailed step of 4)
            opt.step(closure)
            with torch.no_grad():
                net(x), net(x)  # the second evaluation repeats the first: recomputation
    repeated = {r["path"] for r in prof.session["recomputation"]}
    assert "Sequence" in repeated and prof.session["config"]["step_boundary"] == "optimizer"
    assert prof._rec.fingerprints.grad == {}  # (every closure's backward pass consumed them)


def test_a_sibling_nested_in_a_modules_calls_does_not_take_the_rest_of_them():
    S, E = MarkKind.START, MarkKind.END
    marks = [  # a decoder's (1) two calls (their union 0-50), a loss module's (2) call inside
        BackwardMark(1, 3, S, 0.0), BackwardMark(1, 3, E, 30.0),
        BackwardMark(2, 2, S, 10.0), BackwardMark(2, 2, E, 12.0),
        BackwardMark(1, 1, S, 12.0), BackwardMark(1, 1, E, 50.0),
        BackwardMark(3, 4, S, 20.0), BackwardMark(3, 4, E, 25.0),  # the decoder's child (3)
    ]  # fmt: skip
    times = backward_times([-1, 0, 0, 1], marks, (0.0, 60.0))
    assert times == {1: 48.0, 2: 2.0, 3: 5.0}  # the decoder resumes when the loss's call ends


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.gru, self.out = nn.Embedding(3000, 128), nn.GRU(128, 128), nn.Linear(128, 3000)

    def forward(self, token, h):
        o, h = self.gru(torch.relu(self.emb(token).view(1, 1, -1)), h)
        return torch.log_softmax(self.out(o[0]), dim=1), h


def test_a_decoder_called_per_token_with_a_loss_module_per_token_owns_its_backward():
    # the seq2seq tutorial's shape: loss += criterion(decoder(...)) per output token; the
    # criterion's calls start inside the union of the decoder's calls, which lost all but its
    # first call's backward to the step's (self) row
    torch.manual_seed(0)
    dec, criterion = _Decoder(), nn.NLLLoss()
    with torchdoctor.Profiler(dec, syncs=False, hot_lines=False, detail="always") as prof:
        for _ in range(4):
            h, token, loss = torch.zeros(1, 1, 128), torch.tensor([0]), 0
            for target in torch.randint(1, 3000, (6, 1)):
                out, h = dec(token, h)
                loss = loss + criterion(out, target)
                token = target
            loss.backward()
            prof.step()
    nodes = {n["path"]: n for n, _ in walk(prof.session["tree"])}
    total = prof.session["tree"]["backward_ms"]["mean"]
    decoder = nodes["_Decoder"]["backward_ms"]["mean"]
    assert decoder > 0.7 * total, (decoder, total)
    assert nodes["out"]["backward_ms"]["mean"] > nodes["_Decoder.(self)"]["backward_ms"]["mean"]
