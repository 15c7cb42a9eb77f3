"""A CovarianceEMA made under torch.inference_mode() (e.g. lazily, in a warm-up pass) keeps
working outside it (oracle round 8: its num_updates buffer was an inference tensor, and every
later update, reset and load_state_dict raised "Inplace update to inference tensor outside
InferenceMode is not allowed")."""

from __future__ import annotations

import copy

import pytest
import torch

from torchdoctor.ops import CovarianceEMA


@pytest.mark.parametrize("first_update_inside", [False, True])
def test_an_ema_built_under_inference_mode_updates_after_it(first_update_inside):
    with torch.inference_mode():
        ema = CovarianceEMA(decay=0.5)
        if first_update_inside:
            ema.update(torch.eye(2))
    if not first_update_inside:
        ema.update(torch.eye(2))
    ema.update(3 * torch.eye(2))  # bias-corrected: (0.5 * 1 * 0.5 + 0.5 * 3) / 0.75
    torch.testing.assert_close(ema.value(), torch.eye(2) * (0.25 + 1.5) / 0.75)
    assert not ema.num_updates.is_inference() and not ema.average.is_inference()
    saved = copy.deepcopy(ema.state_dict())  # (state_dict tensors share the buffers)
    ema.reset()
    ema.load_state_dict(saved)
    assert int(ema.num_updates) == 2


def test_a_state_loaded_under_inference_mode_updates_after_it():
    source = CovarianceEMA(decay=0.5)
    source.update(torch.eye(2))
    ema = CovarianceEMA(decay=0.5)
    with torch.inference_mode():
        ema.load_state_dict(source.state_dict())
    ema.update(torch.eye(2))
    torch.testing.assert_close(ema.value(), torch.eye(2))
