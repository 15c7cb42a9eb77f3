"""The calibration cache: calibrated costs kept on disk per machine, reused by later runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from torchdoctor.collect import calibration_cache as cache
from torchdoctor.collect import lines_overhead, profiler_overhead, syncs_overhead
from torchdoctor.collect.syncs import SyncAudit


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / "torchdoctor" / "calibration.json"
    monkeypatch.setenv(cache.CACHE_ENV, str(path))
    cache.forget_loaded()
    yield path
    cache.forget_loaded()


def test_a_kept_calibration_is_read_back_for_this_machine_only(cache_file, monkeypatch):
    cache.remember("line_calls", {"timed": 3.5})
    on_disk = json.loads(cache_file.read_text())
    assert list(on_disk) == [cache.machine_key()]
    cache.forget_loaded()
    assert cache.recall("line_calls") == {"timed": 3.5}
    monkeypatch.setattr(cache, "machine_key", lambda: '{"host": "another"}')
    assert cache.recall("line_calls") is None  # another machine, torch build or thread count


def test_a_day_old_calibration_is_measured_anew_and_the_lower_kept(cache_file, monkeypatch):
    now = time.time()
    cache.remember("line_calls", {"timed": 3.5, "seen": 1.0})
    monkeypatch.setattr(cache.time, "time", lambda: now + cache.REFRESH_S + 60)
    assert cache.recall("line_calls") is None  # measured again...
    cache.remember("line_calls", {"timed": 3.0, "seen": 1.4})  # (a busier machine for "seen")
    assert cache.recall("line_calls") == {"timed": 3.0, "seen": 1.0}  # ... the lower kept
    monkeypatch.setattr(cache.time, "time", lambda: now + 2 * cache.REFRESH_S + cache.MAX_AGE_S)
    cache.remember("line_calls", {"timed": 4.0, "seen": 2.0})  # a week old: replaced
    assert cache.recall("line_calls") == {"timed": 4.0, "seen": 2.0}


def test_off_unreadable_or_unwritable_caches_change_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    cache.forget_loaded()
    cache.remember("line_calls", {"timed": 1.0})
    assert cache.cache_path() is None and cache.recall("line_calls") is None
    broken = tmp_path / "calibration.json"
    broken.write_text("{not json")
    monkeypatch.setenv(cache.CACHE_ENV, str(broken))
    assert cache.recall("line_calls") is None  # a corrupt file: calibrate as before
    blocked = tmp_path / "a file" / "calibration.json"
    (tmp_path / "a file").write_text("")  # its folder is a file: cannot be written
    monkeypatch.setenv(cache.CACHE_ENV, str(blocked))
    with pytest.warns(RuntimeWarning, match="cannot keep calibrations in TORCHDOCTOR_CALIBRATION"):
        cache.remember("line_calls", {"timed": 1.0})  # no error: told once, the run goes on
    assert not blocked.exists()
    cache.forget_loaded()


def test_the_collectors_costs_come_from_the_cache_without_calibrating(cache_file, monkeypatch):
    parts = {"timed": 3.0, "outside": 1.0, "later": 0.5, "seen": 1.5, "seen_python": 2.5}
    cache.remember("line_calls", parts)
    cache.remember("module_hooks", {"backward=True,detailed=True": {"total": 9.0, "outside": 2.0}})
    cache.remember("sync_audit_function", 2.25)
    cache.forget_loaded()
    for module in (lines_overhead, profiler_overhead, syncs_overhead):
        monkeypatch.setattr(module, "_cost_us", {})

    def never(*_):
        raise AssertionError("calibrated although the cache holds the cost")

    monkeypatch.setattr(lines_overhead, "_calibrate", never)
    monkeypatch.setattr(profiler_overhead, "_calibrate", never)
    assert lines_overhead.line_call_cost_us("seen_python") == 2.5
    assert profiler_overhead.per_module_call_cost_us(True, True, "outside") == 2.0
    assert syncs_overhead.per_call_cost_us("function", SyncAudit) == 2.25


def test_a_calibration_made_in_a_run_is_kept_for_the_next(cache_file, monkeypatch):
    for module in (lines_overhead, profiler_overhead, syncs_overhead):
        monkeypatch.setattr(module, "_cost_us", {})
    cost = profiler_overhead.per_module_call_cost_us(False, False)
    assert cost >= 0.0
    kept = json.loads(cache_file.read_text())[cache.machine_key()]["module_hooks"]["value"]
    assert kept == {"backward=False,detailed=False": {"total": cost, "outside": pytest.approx(
        profiler_overhead.per_module_call_cost_us(False, False, "outside"))}}


def test_torchdoctor_run_writes_the_cache_and_the_next_run_reads_it(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nnet = torch.nn.Linear(4, 4)\nopt = torch.optim.SGD(net.parameters(), 0.1)\n"
        "for _ in range(6):\n    net(torch.randn(8, 4)).sum().backward(); opt.step(); opt.zero_grad()\n"
    )
    path = tmp_path / "calibration.json"
    env = {**os.environ, cache.CACHE_ENV: str(path)}
    command = [sys.executable, "-m", "torchdoctor", "run", "--out", str(tmp_path / "o"),
               "--quiet", "--no-history", str(script)]  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    first = json.loads(path.read_text())
    (names,) = [set(v) - {"_used"} for v in first.values()]
    assert {"module_hooks", "line_calls", "sync_audit_function"} <= names
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    second = json.loads(path.read_text())
    key = next(iter(first))
    assert second[key]["line_calls"] == first[key]["line_calls"]  # read, not measured again


def test_a_kept_calibration_follows_the_machines_speed_now(cache_file, monkeypatch):
    # the same virtual machine ran small torch work 2x slower in a busy hour: a hook cost kept
    # from a quiet hour read 0.6x what the run measured
    monkeypatch.setattr(cache, "_speed_us", 100.0)
    cache.remember("module_hooks", {"backward=True,detailed=True": {"total": 17.0, "outside": 9.0}})
    cache.forget_loaded()
    monkeypatch.setattr(cache, "_speed_us", 200.0)  # twice as slow now
    assert cache.recall("module_hooks") == {
        "backward=True,detailed=True": {"total": 34.0, "outside": 18.0}}
    # measured anew a day later, now: the lower of the two in today's terms
    now = time.time()
    monkeypatch.setattr(cache.time, "time", lambda: now + cache.REFRESH_S + 60)
    cache.remember("module_hooks", {"backward=True,detailed=True": {"total": 30.0, "outside": 20.0}})
    cache.forget_loaded()
    assert cache.recall("module_hooks") == {
        "backward=True,detailed=True": {"total": 30.0, "outside": 18.0}}


def test_a_calibration_kept_without_the_machines_speed_is_measured_anew(cache_file):
    key = cache.machine_key()
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text(json.dumps({key: {"line_calls": {"value": {"timed": 3.0},
                                                           "at": time.time()}}}))
    cache.forget_loaded()
    assert cache.recall("line_calls") is None


def test_the_machines_speed_is_measured_once_and_leaves_the_random_state(monkeypatch):
    import torch

    monkeypatch.setattr(cache, "_speed_us", None)
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    first = cache.host_speed_us()
    assert torch.equal(torch.rand(2), expected)
    assert 0 < first == cache.host_speed_us()
