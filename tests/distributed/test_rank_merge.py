"""Sessions travel to rank 0 through a c10d store; a damaged or absent store loses nothing else."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from torchdoctor.collect import rank_merge
from torchdoctor.collect.rank_merge import fetch_sessions, publish_session
from torchdoctor.commands.ranks import compare_rank_sessions

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="needs torch.distributed")


class DeadStore:
    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise RuntimeError("Connection refused")

        return fail


def _session(rank):
    return {"schema_version": 1, "environment": {"rank": rank, "world_size": 3},
            "steps": [{}] * 3, "step_ms": {"median": 10.0}, "tree": {"path": ""},
            "phases": {"data": {"median": 1.0 + rank}}}  # fmt: skip


def test_published_sessions_are_fetched_by_rank_and_damage_is_skipped():
    store = dist.HashStore()
    assert publish_session(store, 1, _session(1), run_key="job/0")
    store.set("job/0/rank2", b"not zlib")
    assert publish_session(store, 2, _session(2), run_key="other/0")  # another run's key
    found = fetch_sessions(store, 3, run_key="job/0", skip=(0,))
    assert list(found) == [1] and found[1]["environment"]["rank"] == 1
    assert not publish_session(DeadStore(), 1, _session(1), run_key="job/0")
    assert fetch_sessions(DeadStore(), 3, run_key="job/0") == {}


def test_a_session_too_large_for_the_store_travels_without_its_tree(monkeypatch):
    monkeypatch.setattr(rank_merge, "MAX_BYTES", 10)
    store = dist.HashStore()
    assert publish_session(store, 1, _session(1), run_key="k")
    (data,) = fetch_sessions(store, 2, run_key="k").values()
    assert "tree" not in data and data["steps"]


def test_rank_zero_keeps_a_session_that_came_through_the_store(tmp_path, capsys):
    from torchdoctor.session import Session

    Session.from_dict(_session(0)).save(tmp_path / "rank0" / "session.json")
    result = compare_rank_sessions(str(tmp_path), 3, wait_s=0.2, fetch=lambda: {1: _session(1)})
    assert [r["rank"] for r in result["ranks"]] == [0, 1] and result["missing"] == [2]
    assert Session.load(tmp_path / "rank1" / "session.json")["environment"]["rank"] == 1
    assert "rank 2 is missing" in capsys.readouterr().out
