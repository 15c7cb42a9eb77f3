import torch

from torchdoctor.testing import count_host_syncs
from torchdoctor.workloads import build
from torchdoctor.workloads.token_pruning import greedy_dpp_plain


def test_plain_greedy_dpp_picks_diverse_items():
    # items 0 and 1 are near-duplicates; item 2 is orthogonal: the second pick must be 2
    f = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 0.9]])
    assert greedy_dpp_plain(f @ f.T, 2).tolist() == [0, 2]


def test_token_pruning_kept_indices_identical_and_text_kept():
    w = build("token_pruning", scale="tiny")
    slow, fast = w.slow_step(), w.fast_step()
    assert torch.equal(slow, fast)
    cfg = w.config
    assert slow.numel() == cfg.frames * cfg.keep_per_segment + cfg.text_tokens
    text = torch.nonzero(w.segment_ids < 0).flatten()
    assert torch.isin(text, slow).all()
    assert w.check_equivalence().equivalent


def test_token_pruning_other_sizes_stay_identical():
    w = build("token_pruning", scale="tiny", frames=5, tokens_per_frame=30, keep_ratio=0.5, seed=3)
    assert torch.equal(w.slow_step(), w.fast_step())


def test_fast_token_pruning_syncs_once_slow_once_per_segment():
    w = build("token_pruning", scale="tiny", frames=4)
    with count_host_syncs() as slow:
        w.slow_step()
    with count_host_syncs() as fast:
        w.fast_step()
    assert slow.count >= w.config.frames
    assert fast.count <= 1
