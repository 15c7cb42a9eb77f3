"""cpu-oversubscription: processes the script started that ran at once with more intra-op
threads than cores (pytorch/examples mnist_hogwild), or one process set above its cores."""

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.cpu_threads import cpu_oversubscription, peak_threads


def _child(index, threads, start, end):
    return {"name": "train", "index": index, "out": f"/o/children/train-{index}",
            "threads": threads, "started_at": start, "ended_at": end}  # fmt: skip


def test_children_that_overlap_are_counted_together_and_sequential_ones_are_not():
    overlapping = [_child(0, 4, 0.0, 10.0), _child(1, 4, 1.0, 9.0), _child(2, 4, 20.0, 30.0)]
    total, running = peak_threads(overlapping)
    assert total == 8 and [c["index"] for c in running] == [0, 1]
    session = {"environment": {"threads": 4, "cpus": 4, "device": "cpu"}, "children": overlapping}
    (item,) = cpu_oversubscription(session)
    assert item.title == "2 train processes ran 4 intra-op threads each on 4 cores: give each 2"
    assert item.estimated_saving_ms is None and item.heat == 0.5
    one_by_one = [_child(0, 4, 0.0, 10.0), _child(1, 4, 11.0, 20.0)]
    assert cpu_oversubscription({**session, "children": one_by_one}) == []


def test_threads_within_the_cores_or_a_cuda_run_get_nothing():
    fits = [_child(0, 1, 0.0, 5.0), _child(1, 1, 0.0, 5.0)]
    assert cpu_oversubscription({"environment": {"cpus": 2}, "children": fits}) == []
    crowded = {"environment": {"threads": 16, "cpus": 4, "device": "cuda"}}
    assert cpu_oversubscription(crowded) == []


def test_one_process_above_its_usable_cores_is_told_to_set_its_threads():
    session = {"environment": {"threads": 8, "cpus": 2, "device": "cpu"}, "step_ms": {"median": 5}}
    (item,) = [a for a in advise(session) if a.rule == "cpu-oversubscription"]
    assert item.code == "torch.set_num_threads(2)" and item.confidence == "high"
    assert "affinity" in item.evidence[0]


def test_usable_cores_are_capped_by_the_containers_cpu_quota(tmp_path):
    """A container given 1.5 CPUs (cgroup v2 cpu.max) may use 2 cores, whatever the host has;
    cgroup v1's quota and period say the same; no quota ("max", -1): the affinity mask."""
    from torchdoctor.session import _usable_cpus

    affinity = _usable_cpus(str(tmp_path / "none"))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _usable_cpus(str(tmp_path)) == min(2, affinity)
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert _usable_cpus(str(tmp_path / "v1")) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _usable_cpus(str(tmp_path)) == affinity
