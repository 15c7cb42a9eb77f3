import pytest
import torch

from torchdoctor.workloads import WORKLOADS, build, workload_class
from torchdoctor.workloads.mixture_vae import (
    remap_labels_on_device,
    remap_labels_on_host,
    separability,
)


def test_registry_lists_five_workloads_with_summaries():
    assert set(WORKLOADS) == {
        "part_contrastive",
        "diffusion_policy",
        "mixture_vae",
        "token_pruning",
        "crossmodal_reid",
    }
    assert all(summary for _, _, summary in WORKLOADS.values())


def test_unknown_workload_and_config_field_are_clear_errors():
    with pytest.raises(ValueError, match="known workloads"):
        workload_class("nope")
    with pytest.raises(TypeError, match="unknown config field"):
        build("mixture_vae", scale="tiny", batchsize=3)
    with pytest.raises(ValueError, match="unknown scale"):
        build("mixture_vae", scale="huge")


def test_device_remap_matches_host_remap_and_unique():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 7, 11, 42, 100, 257])[torch.randint(6, (200,), generator=g)]
    expected = torch.unique(labels, return_inverse=True)[1]
    assert torch.equal(remap_labels_on_device(labels), expected)
    assert torch.equal(remap_labels_on_host(labels), expected)


def test_separability_ignores_empty_class_slots():
    torch.manual_seed(0)
    mu = torch.randn(12, 3)
    labels = torch.arange(3).repeat(4)
    assert torch.allclose(separability(mu, labels, 3), separability(mu, labels, 10))


def test_mixture_vae_steps_and_equivalence():
    w = build("mixture_vae", scale="tiny", log_every=4)
    for _ in range(2):
        assert torch.isfinite(w.slow_step())
        assert torch.isfinite(w.fast_step())
    report = w.check_equivalence(steps=50)
    assert report.equivalent, report.summary()
    names = [c.name for c in report.checks]
    assert any("identical" in n for n in names)
    slow_syncs, fast_syncs = w.syncs_per_step()
    assert slow_syncs >= 4 and fast_syncs == 0


def test_mixture_vae_fast_logs_lazily_every_log_every_steps():
    w = build("mixture_vae", scale="tiny", log_every=3)
    for _ in range(7):
        w.fast_step()
    history = w.fast["history"]
    assert len(history) == 2 and set(history[0]) >= {"loss", "nll", "kl", "separability"}
