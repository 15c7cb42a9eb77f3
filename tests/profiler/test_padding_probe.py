"""Padded token batches measured in detailed steps (collect/padding.py) and in the session."""

from __future__ import annotations

import torch
from torch import nn

import torchdoctor
from torchdoctor.collect.padding import GIVE_UP_AFTER, PaddingProbe, resolve


class TextModel(nn.Module):
    """A Hugging Face-shaped model: forward(input_ids, attention_mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return self.head(hidden.mean(1))


class Wrapper(nn.Module):
    """The user's module calls the text model inside: the mask is one level down."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TextModel()

    def forward(self, batch):
        return self.inner(**batch)


def _batch(lengths, width):
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return {"input_ids": torch.randint(0, 50, (len(lengths), width)), "attention_mask": mask}


def test_the_session_holds_each_detailed_steps_padded_batch():
    model = Wrapper()
    with torchdoctor.Profiler(model, syncs=False, warmup=0, detail="always") as prof:
        for _ in range(3):
            model(_batch([3, 5, 2, 4], 8)).sum().backward()
            prof.step()
    padded = [s["padding"] for s in prof.session["steps"]]
    assert padded == [{"positions": 32, "real": 14, "per_batch": 20, "lengths": [3, 5, 2, 4]}] * 3


def test_a_positional_mask_is_found_by_the_forwards_signature():
    model = TextModel()
    batch = _batch([1, 4], 6)
    with torchdoctor.Profiler(model, syncs=False, warmup=0, detail="always") as prof:
        model(batch["input_ids"], batch["attention_mask"]).sum().backward()
        prof.step()
    assert prof.session["steps"][0]["padding"]["real"] == 5


def test_a_decoding_step_is_no_padded_batch():
    """One new token per row against the whole mask (generate's decode steps): not measured."""
    probe = PaddingProbe()
    mask = torch.ones(2, 9, dtype=torch.long)
    probe.note(TextModel(), (), {"input_ids": torch.ones(2, 1, dtype=torch.long),
                                 "attention_mask": mask})  # fmt: skip
    assert probe.found is None and probe.wanted


def test_a_key_padding_mask_marks_padding_with_true():
    probe = PaddingProbe()
    pad = torch.tensor([[False, False, True], [False, True, True]])
    probe.note(nn.Identity(), (), {"src": torch.randn(2, 3, 4), "src_key_padding_mask": pad})
    assert resolve(probe.take()) == {"positions": 6, "real": 3, "per_batch": 4, "lengths": [2, 1]}


def test_float_and_4d_masks_are_left_alone():
    probe = PaddingProbe()
    ids = torch.ones(2, 3, dtype=torch.long)
    probe.note(nn.Identity(), (), {"input_ids": ids, "attention_mask": torch.ones(2, 3)})
    probe.note(nn.Identity(), (), {"input_ids": ids,
                                   "attention_mask": torch.ones(2, 1, 3, 3, dtype=torch.long)})
    assert probe.found is None


def test_a_run_without_masks_stops_looking():
    probe = PaddingProbe()
    for _ in range(GIVE_UP_AFTER):
        assert probe.wanted
        probe.take()
    assert not probe.wanted
    probe.take()  # (an empty step later does not wake it)
    assert not probe.wanted


def test_a_run_with_masks_keeps_looking_after_steps_without():
    probe = PaddingProbe()
    probe.note(nn.Identity(), (), _batch([1, 2], 3))
    assert probe.take() is not None
    for _ in range(2 * GIVE_UP_AFTER):
        probe.take()
    assert probe.wanted
