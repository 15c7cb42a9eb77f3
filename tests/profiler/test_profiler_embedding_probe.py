"""A trained dense embedding makes a table-sized gradient at each call: the recorder notes its
lookups and the most calls a step made, and when the profiler stops it times the step's calls
on the module's own table, dense and sparse, without touching the user's gradients (the tree's
backward of a first layer runs to the next mark and is no measure of it: sentence-transformers'
stated 74 ms saving measured 15-26)."""

import torch
from torch import nn

import torchdoctor
from torchdoctor.session_read import walk


class Encoder(nn.Module):
    def __init__(self, sparse=False):
        super().__init__()
        self.emb = nn.Embedding(4000, 64, sparse=sparse)
        self.gru = nn.GRU(64, 64)

    def forward(self, token, h):
        return self.gru(self.emb(token).view(1, 1, -1), h)


def _run(model, steps=4, calls=5):
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torchdoctor.Profiler(model, detail="always", syncs=False, hot_lines=False) as prof:
        for _ in range(steps):
            h, outs = torch.zeros(1, 1, 64), []
            for token in torch.randint(0, 4000, (calls, 1)):
                out, h = model(token, h)
                outs.append(out)
            opt.zero_grad()
            torch.stack(outs).square().mean().backward()
            opt.step()
            prof.step()
        grad = None if model.emb.weight.grad is None else model.emb.weight.grad.clone()
        weight = model.emb.weight.detach().clone()
    assert torch.equal(model.emb.weight.detach(), weight)  # (the probe at stop left the
    if grad is not None:  # user's table and gradient as they were)
        assert torch.equal(model.emb.weight.grad.to_dense(), grad.to_dense())
    return prof.session


def _node(session, path):
    return next(n for n, _ in walk(session["tree"]) if n.get("path") == path)


def test_a_dense_table_looked_up_per_token_is_timed_both_ways_on_its_own_calls():
    session = _run(Encoder())
    probe = _node(session, "emb")["embedding"]
    assert (probe["rows"], probe["table"], probe["calls"], probe["bag"]) == (1, [4000, 64], 5, False)
    measured = probe["measured"]
    assert measured["reps"] >= 3 and measured["dense_ms"] > measured["sparse_ms"] > 0
    assert "step" not in probe  # (the recorder's own bookkeeping stays out of the session)


def test_a_sparse_table_or_a_frozen_one_is_not_probed():
    model = Encoder(sparse=True)
    assert _node(_run(model, steps=2), "emb").get("embedding") is None
    frozen = Encoder()
    frozen.emb.weight.requires_grad_(False)
    assert _node(_run(frozen, steps=2), "emb").get("embedding") is None
