"""Recomputation through a chain of calls: a module given the output of a call that was itself
recomputed on identical inputs computes the same thing again (``encoder(embed(src))`` in a
greedy decoder's loop: ``embed`` makes a new tensor each time, of the same values)."""

import torch
from torch import nn

import torchdoctor


def _decode(embed, encoder, decoder, src, tokens=12, grad=False):
    ys = torch.zeros(src.size(0), 1, dtype=torch.long)
    with torch.set_grad_enabled(grad):
        for _ in range(tokens):
            memory = encoder(embed(src)).mean(1, keepdim=True)  # the same source every token
            out = decoder(embed(ys)[:, -1:] + memory)  # the growing tokens: new work
            ys = torch.cat([ys, out.argmax(-1)], dim=1)
    return ys


def _models():
    torch.manual_seed(0)
    embed = nn.Embedding(16, 32)
    encoder = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
    decoder = nn.Sequential(nn.Linear(32, 16))
    return embed, encoder, decoder


def test_a_module_fed_by_a_recomputed_call_is_recomputed_too():
    embed, encoder, decoder = _models()
    src = torch.randint(0, 16, (4, 6))
    with torchdoctor.Profiler(step_boundary="auto", syncs=False) as prof:
        _decode(embed, encoder, decoder, src)
    records = {r["path"]: r for r in prof.session["recomputation"]}
    assert records["encoder"]["identical_input_calls"] == 1, records  # (one per token)
    assert not any(p.startswith("decoder") for p in records), records
    from torchdoctor.analyze.advice.recompute import loop_invariant

    titles = [a.title for a in loop_invariant(prof.session)]
    assert "Compute encoder once and reuse it: its inputs and weights do not change" in titles


def test_outputs_of_calls_with_grad_are_not_followed():
    """In a training step the same input can be run twice on purpose (a graph each time): only
    calls made without grad describe their outputs by the call."""
    embed, encoder, decoder = _models()
    src = torch.randint(0, 16, (4, 6))
    with torchdoctor.Profiler(step_boundary="auto", syncs=False) as prof:
        _decode(embed, encoder, decoder, src, grad=True)
    paths = [r["path"] for r in prof.session["recomputation"]]
    assert not any(p.startswith(("encoder", "decoder")) for p in paths), paths


def test_an_inference_loops_encoder_identical_in_most_steps_is_advised_against_the_light_step():
    """A sampler's encoder, one call per step, compared across steps: when a detailed step
    begins a new sample, 9 of 10 calls are identical (0.9 per step, once counted as less than
    one repeat and dropped). The saving is its share of the detailed step, of the step as it
    runs without the profiler."""
    from torchdoctor.analyze.advice.recompute import loop_invariant

    record = {"path": "obs_encoder", "calls_per_step": 1.0, "identical_input_calls": 0.9,
              "time_per_call_ms": 3.0, "source": None}  # fmt: skip
    session = {"recomputation": [record], "step_ms": {"median": 4.0},
               "config": {"profiler_overhead": {"overhead_ms": 2.0}}}  # fmt: skip
    (item,) = loop_invariant(session)
    assert item.title.startswith("Compute obs_encoder once")
    assert abs(item.estimated_saving_ms - 2.7 / 4.0 * 2.0) < 1e-9  # 67% of a 2 ms step
