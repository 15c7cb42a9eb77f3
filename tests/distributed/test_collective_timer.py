"""The collective timer in one process (a gloo group of one rank): what it records and removes."""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

from torchdoctor.collect.collectives import CollectiveTimer, payload_bytes
from torchdoctor.collect.collectives_summary import summarize_collectives

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)


@pytest.fixture
def group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _line(marker: str) -> int:
    for number, text in enumerate(open(__file__).read().splitlines(), start=1):
        if marker in text and "_line(" not in text:
            return number
    raise AssertionError(marker)


def test_api_calls_are_timed_per_site_with_bytes_and_removed_at_stop(group):
    originals = (dist.all_reduce, dist.distributed_c10d.all_reduce, dist.barrier)
    work_wait = dist.distributed_c10d.Work.wait
    timer = CollectiveTimer().start()
    try:
        assert dist.all_reduce is not originals[0]
        tensor = torch.ones(256)
        dist.all_reduce(tensor)  # site: blocking
        work = dist.all_reduce(tensor, async_op=True)  # site: async
        work.wait()
        gathered = [None]
        dist.all_gather_object(gathered, {"a": 1})  # site: object (all_gather inside not counted)
        dist.barrier()
        from torch.distributed import broadcast

        broadcast(tensor, src=0)
    finally:
        timer.stop()
    assert (dist.all_reduce, dist.distributed_c10d.all_reduce, dist.barrier) == originals
    assert dist.distributed_c10d.Work.wait is work_wait
    kinds = [c.kind for c in timer.records]
    assert kinds == ["all_reduce", "all_reduce", "all_gather_object", "barrier", "broadcast"]
    blocking, asynchronous, objects = timer.records[:3]
    assert blocking.site[1] == _line("# site: blocking") and blocking.bytes == 1024
    assert not blocking.is_async and blocking.exposed_ns == blocking.end - blocking.start > 0
    assert asynchronous.is_async and asynchronous.site[1] == _line("# site: async")
    assert asynchronous.end is not None and asynchronous.exposed_ns >= 0
    assert objects.bytes is None  # pickled objects: size unknown
    assert [c.seq for c in timer.records] == [0, 1, 2, 3, 4]  # the order across ranks
    assert timer.store is not None and timer.world_size == 1 and timer.backend == "gloo"
    section = summarize_collectives(timer, {"steps": [], "config": {}, "step_ms": {"mean": 1e9}})
    rows = {(r["kind"], r["site"]["line"]): r for r in section["by_site"]}
    row = rows[("all_reduce", _line("# site: blocking"))]
    assert row["calls_per_step"] == 1.0 and row["bytes_per_call"] == 1024.0
    assert row["site"]["code"] == "dist.all_reduce(tensor)  # site: blocking"
    assert 0 < section["share_pct"] < 1 and len(section["arrivals"]) == 5


def test_ddp_buckets_are_timed_through_a_comm_hook_with_ddp_results_unchanged(group):
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    model = nn.parallel.DistributedDataParallel(plain)
    x = torch.randn(4, 8)
    timer = CollectiveTimer().start()
    try:
        model(x).sum().backward()
        # a bucket's end is stamped by its future's callback, which may run just after
        # backward returns: give it a moment (a busy machine delays that thread)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(
            c.end is None for c in timer.records if c.ddp
        ):
            time.sleep(0.01)
    finally:
        timer.stop()
    buckets = [c for c in timer.records if c.ddp]
    assert buckets and all(c.kind == "all_reduce" and c.end >= c.start for c in buckets)
    assert timer.ddp[0]["timed"] and timer.ddp[0]["buckets_bytes"]
    assert not [c for c in timer.records if not c.ddp]  # the hook's own all_reduce: not twice
    expected = torch.autograd.grad(plain(x).sum(), plain[0].weight)[0]
    assert torch.allclose(plain[0].weight.grad, expected)  # world of one: the mean is itself
    model(x).sum().backward()  # after stop the hook only forwards
    assert len([c for c in timer.records if c.ddp]) == len(buckets)


def test_a_comm_hook_of_the_script_is_kept_and_said(group):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
    model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    timer = CollectiveTimer().start()
    try:
        model(torch.randn(2, 4)).sum().backward()
    finally:
        timer.stop()
    assert timer.ddp[0]["timed"] is False and "fp16_compress_hook" in timer.notes[0]
    assert not [c for c in timer.records if c.ddp]


def test_a_comm_hook_registered_after_ours_is_called_by_ours(group):
    calls = []

    def counting_hook(state, bucket):
        calls.append(bucket.index())
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
    timer = CollectiveTimer().start()
    try:
        model(torch.randn(2, 4)).sum().backward()  # our hook registered at this forward
        model.register_comm_hook(None, counting_hook)  # DDP allows one: ours delegates
        model(torch.randn(2, 4)).sum().backward()
    finally:
        timer.stop()
    assert calls == [0] and len([c for c in timer.records if c.ddp]) == 2
    assert timer.ddp[0]["hook"].endswith("counting_hook")


def test_timer_without_a_process_group_records_nothing_and_bad_calls_raise_as_before():
    timer = CollectiveTimer().start()
    try:
        with pytest.raises(ValueError, match="Default process group has not been initialized"):
            dist.all_reduce(torch.ones(2))
    finally:
        timer.stop()
    assert timer.records == [] and timer.store is None


def test_payload_bytes_takes_the_largest_tensor_argument():
    assert payload_bytes([torch.zeros(2, dtype=torch.float64), [torch.zeros(3)] * 2]) == 24
    assert payload_bytes([None, 0]) is None


def test_the_wait_for_ddp_s_last_bucket_is_not_the_first_layer_s_backward(group):
    """DDP waits for its last bucket's all-reduce at the end of backward; the first layer's
    backward (its input needs no grad: no end mark of its own) ends at that bucket's launch,
    not with the pass, so the wait is not blamed on it."""
    import threading

    import torchdoctor
    from torchdoctor.session_read import walk

    def slow_all_reduce(state, bucket):  # the script's hook: completes 30 ms later
        future = torch.futures.Future()

        def finish():
            time.sleep(0.03)
            future.set_result(bucket.buffer())

        threading.Thread(target=finish).start()
        return future

    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    timer = CollectiveTimer().start()
    try:
        with torchdoctor.Profiler(
            step_boundary="auto", syncs=False, hot_lines=False, detail="always", warmup=1
        ) as prof:
            for step in range(5):
                model(torch.randn(4, 8)).sum().backward()
                if step == 0:  # after our hook attached at the first forward: ours calls it
                    model.register_comm_hook(None, slow_all_reduce)
                opt.step()
                opt.zero_grad()
    finally:
        timer.stop()
    nodes = {node["path"]: node for node, _ in walk(prof.session["tree"])}
    first = nodes["module.0"]["backward_ms"]["median"]
    total = prof.session["phases"]["backward"]["median"]
    assert total > 25.0  # the wait is in the step's backward
    assert first < 10.0, (first, total)  # ... but not in the first layer's
