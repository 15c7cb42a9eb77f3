"""Recomputation seen through keyword arguments: the profiler's forward hook receives them."""

import torch
from profiler_helpers import backward_steps
from torch import nn

import torchdoctor
from torchdoctor.session_read import walk


class TextEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 16)

    def forward(self, input_ids=None, attention_mask=None):
        return self.proj(self.emb(input_ids)) * attention_mask[..., None]


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(16, 16)
        self.t_emb = nn.Embedding(100, 16)

    def forward(self, cond, t=None):
        return self.net(cond + self.t_emb(t)[:, None])


def _sample(encoder, denoiser, steps=6):
    ids, mask = torch.randint(0, 50, (2, 5)), torch.ones(2, 5)
    with torch.no_grad():
        for t in range(steps):
            cond = encoder(input_ids=ids, attention_mask=mask)  # the same keywords each time
            denoiser(cond.detach(), t=torch.full((2,), t))  # a new timestep each time


def test_a_keyword_only_encoder_rerun_on_the_same_inputs_is_recomputation():
    torch.manual_seed(0)
    encoder, denoiser = TextEncoder().eval(), Denoiser().eval()
    with torchdoctor.Profiler(detail="always", syncs=False, hot_lines=False) as prof:
        _sample(encoder, denoiser)
    records = {r["path"]: r for r in prof.session["recomputation"]}
    assert records["TextEncoder"]["identical_input_calls"] == 5.0
    assert "encoder(input_ids=ids" in records["TextEncoder"]["call_site"]["code"]


def test_a_new_keyword_timestep_is_new_work_even_at_a_reused_address():
    """``cond`` repeats; ``t`` is a fresh tensor each call, often at the address the freed
    previous one had: neither the keyword nor the reused memory may pass for the same input."""
    torch.manual_seed(0)
    encoder, denoiser = TextEncoder().eval(), Denoiser().eval()
    with torchdoctor.Profiler(detail="always", syncs=False, hot_lines=False) as prof:
        _sample(encoder, denoiser)
    paths = {r["path"] for r in prof.session["recomputation"]}
    assert "Denoiser" not in paths and "Denoiser.t_emb" not in paths


def test_keyword_inputs_end_their_module_backward():
    """A block called with its hidden states as a keyword (as Llama's attention is) has its
    backward end when their gradient is complete, not at the next module's backward: the
    backward of the user code between the two is not the block's."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(256, 256)
            self.mix = nn.Parameter(torch.randn(256, 256) / 16)
            self.block = nn.Sequential(nn.Linear(256, 8))

        def forward(self, x):
            h = self.first(x)
            for _ in range(12):  # user code, no module: its backward is the step's own
                h = h @ self.mix
            return self.block(input=h)

    session = backward_steps(Net(), torch.randn(512, 256), steps=6)
    nodes = {n["path"]: n for n, _ in walk(session["tree"])}
    block = nodes["block"]["backward_ms"]["mean"]
    mix = nodes["Net.(self)"]["backward_ms"]["mean"]  # the 12 matmuls' backward
    assert block < 0.25 * mix, (block, mix)
