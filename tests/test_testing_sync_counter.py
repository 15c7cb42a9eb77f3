"""count_host_syncs: what tests across the suite rely on to assert sync-free hot paths."""

import torch

from torchdoctor.testing import count_host_syncs


def test_counts_data_dependent_ops():
    x = torch.arange(6.0)
    with count_host_syncs() as syncs:
        x.sum().item()
        x[x > 2]
        torch.nonzero(x)
        torch.unique(x)
    assert syncs.ops == {
        "aten::_local_scalar_dense": 1,
        "aten::index": 1,
        "aten::nonzero": 1,
        "aten::_unique2": 1,
    }


def test_integer_indexing_and_plain_math_do_not_count():
    x = torch.arange(6.0)
    with count_host_syncs() as syncs:
        x[torch.tensor([1, 2])]
        x.gather(0, torch.tensor([0, 5]))
        (x * 2 + 1).softmax(0)
    assert syncs.count == 0


def test_whole_tensor_host_reads_count_once_each():
    x = torch.arange(6.0)
    with count_host_syncs() as syncs:
        x.tolist()
        x.numpy()
        x.cpu()
        x.to("cpu")  # no-op on a CPU tensor (code writes .to(x.device) for uploads too)
        x.to(torch.float64)  # a dtype cast: no read
        x.sum().item()  # counted once, at dispatch
    assert syncs.ops == {
        "Tensor.tolist": 1,
        "Tensor.numpy": 1,
        "Tensor.cpu": 1,
        "aten::_local_scalar_dense": 1,
    }
    with count_host_syncs() as syncs, torch._C.DisableTorchFunction():
        x.numpy()  # a deliberate read of CPU memory (the ops' CPU engines)
    assert syncs.count == 0
