"""Device residency on a CPU run: only reads of device data are predicted syncs.

Host data (NumPy memmap batches indexed with ``torch.randint`` indices, factories without a
device, ``.cpu()`` copies) is not a device sync; parameters, buffers, module outputs, tensors
moved with ``.to(device)`` and what is computed from them are.
"""

from __future__ import annotations

import gc
import inspect

import numpy as np
import pytest
import torch
from torch import nn

from torchdoctor.collect.syncs import SyncAudit


def _audit(thorough: bool = False) -> SyncAudit:
    return SyncAudit(thorough, predict=True)  # a CPU run's prediction, even where CUDA exists


def _lines(audit: SyncAudit) -> list[tuple[str, int]]:
    return sorted((r["kind"], r["line"]) for r in audit.records())


def _line_of(func, marker: str) -> int:
    lines, start = inspect.getsourcelines(func)
    (hit,) = [start + i for i, text in enumerate(lines) if marker in text]
    return hit


@pytest.fixture
def memmap_file(tmp_path):
    path = tmp_path / "train.bin"
    np.random.default_rng(0).integers(0, 65, size=4096).astype(np.uint16).tofile(path)
    return path


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_nanogpt_get_batch_is_host_data_and_the_loss_read_is_a_sync(memmap_file, thorough):
    block_size, batch_size, device = 16, 4, "cpu"
    model = nn.Sequential(nn.Embedding(65, 8), nn.Linear(8, 65))

    def get_batch():  # karpathy/nanoGPT's train.py, as written
        data = np.memmap(memmap_file, dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy((data[i : i + block_size]).astype(np.int64)) for i in ix])
        y = torch.stack(
            [torch.from_numpy((data[i + 1 : i + 1 + block_size]).astype(np.int64)) for i in ix]
        )
        x, y = x.to(device), y.to(device)
        return x, y

    def step():
        x, y = get_batch()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.view(-1, 65), y.view(-1))
        loss.backward()
        return loss.item()  # the sync

    with _audit(thorough) as audit:
        for _ in range(3):
            step()
    assert _lines(audit) == [("item", _line_of(step, "# the sync"))]
    assert all("memmap" not in r["file"] for r in audit.records())


def test_host_factories_and_what_is_computed_from_them_are_not_syncs():
    weight = nn.Parameter(torch.ones(3))

    def run():
        ix = torch.randint(10, (4,))
        total = [int(i) for i in ix]  # host: indices for Python
        losses = torch.zeros(2)
        losses[0] = (weight * 2).sum().item()  # device read
        text = f"{losses.mean():.3f}"  # host tensor formatted
        if losses[0] > 0:  # host tensor tested
            pass
        ix.tolist()
        return total, text

    with _audit() as audit:
        run()
    assert _lines(audit) == [("item", _line_of(run, "# device read"))]


def test_moved_or_made_on_the_device_counts_even_when_the_device_is_the_cpu():
    device = torch.device("cpu")

    def run():
        moved = torch.arange(4.0).to(device)
        made = torch.ones(2, device=device)
        moved.sum().item()  # moved
        made.tolist()  # made
        moved.cpu().numpy()  # copied: one sync, the copy
        host = moved.to("cpu")
        return host

    with _audit() as audit:
        run()
    expected = [
        ("item", _line_of(run, "# moved")),
        ("tolist", _line_of(run, "# made")),
        ("cpu", _line_of(run, "# copied")),
        ("cpu", _line_of(run, 'host = moved.to("cpu")')),
    ]
    assert _lines(audit) == sorted(expected)


def test_buffers_parameters_and_module_outputs_are_device_data():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("count", torch.zeros(()))  # a host factory, registered
            self.linear = nn.Linear(3, 1)

        def forward(self, x):
            return self.linear(x)

    def run():
        net = Net()
        out = net(torch.ones(2, 3))  # host input, parameters: the output is device data
        out.sum().item()  # output
        net.count.item()  # buffer
        net.linear.bias.tolist()  # parameter

    with _audit() as audit:
        run()
    assert _lines(audit) == sorted(
        [
            ("item", _line_of(run, "# output")),
            ("item", _line_of(run, "# buffer")),
            ("tolist", _line_of(run, "# parameter")),
        ]
    )


def test_tensors_made_before_the_audit_still_count_as_device_data():
    x = torch.arange(3.0)
    with _audit() as audit:
        x.sum().item()
    assert [r["kind"] for r in audit.records()] == ["item"]


def test_host_marks_go_with_their_tensors():
    with _audit() as audit:
        for _ in range(50):
            ix = torch.randint(10, (8,))
            for i in ix:
                _ = i + 1
        del ix, i, _
        gc.collect()
        assert len(audit.residency) < 5


def test_from_numpy_is_host_data_and_a_move_that_names_no_device_keeps_it():
    device = "cpu"  # a variable, as in a GPU script: .to(device) is a move to the accelerator

    def sample():  # a diffusers scheduler's timesteps (set_timesteps(n) passes device=None)
        timesteps = torch.from_numpy(np.arange(0, 1000, 100)[::-1].copy()).to(None)
        betas = torch.from_numpy(np.linspace(1e-4, 0.02, 1000)).to(torch.float32)
        for t in timesteps:
            if t > 0:  # host data: no sync
                _ = betas[t].item()  # host data again
        moved = torch.from_numpy(np.ones(3)).to(device)
        return moved.sum().item()  # DEVICE moved to the accelerator

    with _audit() as audit:
        sample()
    assert _lines(audit) == [("item", _line_of(sample, "DEVICE"))]
    assert torch.from_numpy.__module__ != __name__  # (the wrapper is gone with the audit)


def test_views_of_host_data_made_while_the_audit_was_paused_stay_host_data():
    device = "cpu"
    timesteps = None
    with _audit() as audit:
        timesteps = torch.from_numpy(np.arange(5))  # seen: the wrapper outlives a pause
        audit.pause()  # between the profiler's detail windows
        steps = list(timesteps)  # the elements (views of it) made unseen
        batch = torch.from_numpy(np.ones((2, 3)))
        row = batch[0]
        audit.resume()
        waits = [bool(t > 2) for t in steps]  # host data: no sync
        moved = row.to(device)  # the same object on a CPU run, moved all the same
        total = moved.sum().item()  # DEVICE
        unmoved = batch[1].sum().item()  # host data
    assert waits == [False, False, False, True, True] and total == unmoved == 3.0
    assert [r["kind"] for r in audit.records()] == ["item"]


def test_a_gpu_run_decides_by_the_real_device():
    audit = SyncAudit(predict=False)
    assert audit.residency is None
    with audit:
        torch.zeros(3).sum().item()  # a CPU tensor in a GPU run: no sync
    assert audit.records() == []


def _score(prediction, target):
    correct = (prediction == target).cpu()  # COPY
    hits = [int(correct[i]) for i in range(len(correct))]  # READ host data
    wrong = [i for i in range(len(correct)) if not correct[i]]  # READ again
    total = prediction.sum().item()  # DEVICE the input is still device data
    return hits, wrong, total


def test_a_cpu_copy_is_host_data_while_its_source_stays_device_data():
    """On a CPU run ``x.cpu()`` returns ``x`` itself: its reads after the copy were predicted
    as syncs (minGPT's evaluation: 20k per pass). The copy is one sync; reading it is none;
    the tensor it was copied from stays device data."""
    net = nn.Linear(4, 1)
    prediction = net(torch.randn(6, 4)).detach() > 0
    target = torch.zeros(6, 1, dtype=torch.bool)
    with _audit() as audit:
        hits, wrong, total = _score(prediction, target)
    assert len(hits) == 6 and len(wrong) == 6 - sum(hits)
    assert total == float(prediction.sum())
    assert _lines(audit) == sorted(
        [("cpu", _line_of(_score, "# COPY")), ("item", _line_of(_score, "# DEVICE"))]
    )


def test_a_cpu_copy_of_a_tensor_that_requires_grad_is_the_tensor_itself():
    weight = torch.randn(3, requires_grad=True)
    with _audit():
        same = weight.cpu()
    assert same is weight and same.is_leaf


def _dcgan_step(data, device):
    real_cpu = data[0].to(device)  # MOVE the batch to the device, whatever its name says
    return real_cpu.mean().item()  # READ a device tensor


def test_a_variable_named_cpu_does_not_make_a_move_a_copy_to_the_host():
    """pytorch/examples DCGAN: `real_cpu = data[0].to(device)` was predicted as a copy to the
    host ("cpu" in the line) and its reads as host data."""
    with _audit() as audit:
        _dcgan_step((torch.randn(4, 3),), torch.device("cpu"))
    assert _lines(audit) == [("item", _line_of(_dcgan_step, "# READ"))]


def test_a_sync_record_counts_the_steps_it_happened_in():
    """minGPT's evaluation ran 100 .cpu() calls in one step of 15: "x6.67/step" read as a
    per-step habit; the record keeps the steps, the advice says "x100 in 1 step"."""
    from torchdoctor.analyze.advice.syncs import host_syncs
    from torchdoctor.collect.syncs_records import group_records

    events = {("/w/t.py", 5, "evaluate", "cpu", "other", 3, None): [100, 0.0],
              ("/w/t.py", 9, "train", "item", "other", 0, None): [1, 0.0],
              ("/w/t.py", 9, "train", "item", "other", 1, None): [1, 0.0]}  # fmt: skip
    records = {r["line"]: r for r in group_records(events, True, num_steps=15)}
    assert (records[5]["count"], records[5]["steps"]) == (100, 1)
    assert records[9]["steps"] == 2
    session = {"step_ms": {"median": 10.0}, "syncs": list(records.values())}
    evidence = " ".join(e for a in host_syncs(session) for e in a.evidence)
    assert "x100 in 1 step (x6.67/step on average)" in evidence, evidence


def test_marks_hold_no_callback_and_stay_bounded_when_tensors_are_freed():
    """A weak reference's Python callback swallows a Ctrl-C that lands in it ("Exception
    ignored in ... KeyboardInterrupt": an RL loop freeing thousands of small tensors a second
    ran on after SIGINT): the marks carry none, and dead ones are dropped in batches."""
    import weakref

    from torchdoctor.collect.residency import PRUNE_AT, Residency

    residency = Residency()
    kept = residency.mark_host(torch.zeros(1))
    assert all(ref.__callback__ is None for ref in weakref.getweakrefs(kept))
    for _ in range(5 * PRUNE_AT):
        residency.mark_host(torch.zeros(1))  # (freed at once)
    assert len(residency._host) <= 2 * PRUNE_AT
    assert len(residency) == 1 and residency.is_host(kept)


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
def test_a_data_loader_batch_is_host_data_until_moved(workers):
    """pytorch/examples' DDP tutorial ported to the CPU: ``source.to("cpu")`` of a DataLoader
    batch is no read-back (on CUDA it is ``.to(gpu_id)``, a copy to the device), while the loss,
    computed from the batch moved to the device, still is."""
    from torch.utils.data import DataLoader, TensorDataset

    # made before the audit starts: the audit never saw these tensors being made
    data = TensorDataset(torch.rand(8, 4), torch.randint(0, 3, (8,)))
    loader = DataLoader(data, batch_size=4, num_workers=workers)
    model, device = nn.Linear(4, 3), torch.device("cpu")
    with _audit() as audit:
        for source, targets in loader:
            source = source.to("cpu")  # CPU port
            labels = {"y": targets}
            first = int(labels["y"][0])  # a label, read on the host
            moved = source.to(device)
            loss = nn.functional.cross_entropy(model(moved), targets + first * 0)
            loss.item()  # LOSS-READ
    loss_line = _line_of(test_a_data_loader_batch_is_host_data_until_moved, "LOSS" + "-READ")
    assert _lines(audit) == [("item", loss_line)]
