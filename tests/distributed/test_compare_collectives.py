"""Cross-rank communication (waits, late rank, slowest collective) and the communication advice."""

from __future__ import annotations

import pytest

from torchdoctor.analyze.advice.communication import communication
from torchdoctor.analyze.collectives import compare_collectives, covered_ms
from torchdoctor.analyze.ranks import compare_ranks
from torchdoctor.render.ranks import render_ranks_markdown, render_ranks_text

MS = 1_000_000


def _row(kind="all_reduce", line=9, ms=2.0, exposed=2.0, calls=1.0, nbytes=4.0, ddp=False):
    return {"kind": kind, "site": {"file": "/w/train.py", "line": line}, "group": "default",
            "ddp_bucket": ddp, "calls_per_step": calls, "ms_per_step": ms,
            "exposed_ms_per_step": exposed, "bytes_per_call": nbytes, "phase": "backward"}  # fmt: skip


def _session(rank, arrivals, rows, *, step=20.0, host="h", data=1.0, steps=2, error=None):
    total = sum(r["ms_per_step"] for r in rows)
    exposed = sum(r["exposed_ms_per_step"] for r in rows)
    phases = {"data": data, "forward": 5.0, "backward": step - data - 5.0, "optimizer": 0.0,
              "other": 0.0}  # fmt: skip
    return {
        "environment": {"rank": rank, "world_size": 2},
        "config": {"exit_code": 1 if error else 0},
        "error": error,
        "step_ms": {"median": step},
        "steps": [{}] * steps,
        "phases": {p: {"median": v} for p, v in phases.items()},
        "collectives": {
            "steps": steps, "total_ms_per_step": total, "exposed_ms_per_step": exposed,
            "share_pct": 100 * total / step, "exposed_pct": 100 * exposed / step, "host": host,
            "by_site": rows, "ddp": [],
            "arrivals": [["default", i, 0, t, "backward"] for i, t in enumerate(arrivals)],
        },
    }  # fmt: skip


def test_the_rank_arriving_last_is_named_with_the_wait_it_causes():
    # rank 1 arrives 6 ms late at each of two collectives (one per step)
    early = _session(0, [0, 20 * MS], [_row(ms=7.0, exposed=7.0)])
    late = _session(1, [6 * MS, 26 * MS], [_row(ms=1.0, exposed=1.0)], data=7.0)
    result = compare_collectives([early, late])
    by_rank = {r["rank"]: r for r in result["ranks"]}
    assert result["late_rank"] == 1 and result["late_phase"] == "backward"
    assert by_rank[0]["wait_ms_per_step"] == pytest.approx(6.0)
    assert by_rank[1]["wait_ms_per_step"] == 0.0
    assert by_rank[1]["late_ms_per_step"] == pytest.approx(6.0)
    assert result["slowest"]["label"] == "all_reduce at train.py:9"
    assert result["slowest"]["ms_per_step"] == 7.0 and result["slowest"]["median_skew_ms"] == 6.0
    assert result["clock_note"] is None and result["matched_calls"] == 2
    balanced = compare_collectives([
        _session(0, [0, 20 * MS], [_row()]), _session(1, [MS // 10, 20 * MS], [_row()])])  # fmt: skip
    assert balanced["late_rank"] is None  # 0.05 ms per step: not worth naming
    assert compare_collectives([{"environment": {"rank": 0}}]) is None


def test_ranks_on_two_hosts_carry_a_clock_note_and_overlapping_waits_count_once():
    result = compare_collectives([_session(0, [0], [_row()], host="a"),
                                  _session(1, [MS], [_row()], host="b")])  # fmt: skip
    assert "2 hosts" in result["clock_note"]
    assert covered_ms([(0, 3 * MS), (MS, 3 * MS)]) == 3.0  # two async buckets, one wait


def test_rank_report_names_comm_share_slowest_collective_imbalance_and_advice():
    early = _session(0, [0, 20 * MS], [_row(ms=7.0, exposed=7.0)])
    late = _session(1, [6 * MS, 26 * MS], [_row(ms=1.0, exposed=1.0)], data=7.0)
    result = compare_ranks([early, late])
    text = render_ranks_text(result)
    assert "comm ms" in text.splitlines()[0] and "waits ms" in text.splitlines()[0]
    assert "communication: " in text and "slowest collective: all_reduce at train.py:9" in text
    assert "imbalance: rank 1 arrives last; the others wait 6 ms per step" in text
    assert "it spends its extra time in data" in text
    assert "waits for rank 1 at collectives: balance the ranks' work" in text
    assert result["advice"][0]["ranks"] == [0]
    markdown = render_ranks_markdown(result)
    assert "## Collectives" in markdown and "| all_reduce at train.py:9 | 7 |" in markdown


def test_a_rank_that_did_not_finish_and_a_missing_rank_are_named():
    failed = _session(1, [0], [_row()], error="Traceback ...\n  File x\nRuntimeError: boom\n")
    result = compare_ranks([_session(0, [0], [_row()]), failed])
    assert result["stopped"] == [{"rank": 1, "exit_code": 1, "error": "RuntimeError: boom"}]
    assert any(n.startswith("rank 1 did not finish (exit code 1): RuntimeError: boom") for n in
               result["notes"])  # fmt: skip
    alone = compare_ranks([_session(0, [0], [_row()])])
    alone_world = compare_ranks([{**_session(0, [0], [_row()]), "environment": {
        "rank": 0, "world_size": 3}}])  # fmt: skip
    assert alone["missing"] == [1] and alone_world["missing"] == [1, 2]
    assert "rank 2 is missing" in render_ranks_text(alone_world)


def _ddp_session(calls, buckets, *, exposed=12.0, ms=15.0, nbytes=8 * 2**20, view=False,
                 cap=25 * 2**20):  # fmt: skip
    row = _row(ms=ms, exposed=exposed, calls=calls, nbytes=nbytes, ddp=True)
    return {"environment": {"rank": 0}, "step_ms": {"median": 50.0}, "collectives": {
        "total_ms_per_step": ms, "exposed_ms_per_step": exposed, "by_site": [row],
        "ddp": [{"timed": True, "buckets_bytes": [nbytes] * buckets, "bucket_cap_bytes": cap,
                 "gradient_as_bucket_view": view}]}}  # fmt: skip


def test_communication_advice_follows_the_measured_cause():
    (accumulate,) = communication(_ddp_session(calls=4, buckets=2))
    assert "2 times per optimizer step: use no_sync()" in accumulate.title
    assert accumulate.estimated_saving_ms == pytest.approx(6.0)
    (late_start,) = communication(_ddp_session(calls=1, buckets=1))
    assert "use smaller buckets" in late_start.title and "bucket_cap_mb=2" in late_start.fix
    assert "gradient_as_bucket_view=True" in late_start.fix
    small = _ddp_session(calls=1, buckets=1, nbytes=2**20, view=True)  # latency-bound: no split
    assert communication(small) == []
    many = communication(_ddp_session(calls=10, buckets=10, nbytes=2**16, view=True))
    assert "use larger buckets" in many[0].title
    loop = {"step_ms": {"median": 20.0}, "collectives": {
        "total_ms_per_step": 4.0, "exposed_ms_per_step": 4.0, "ddp": [],
        "by_site": [_row(calls=16.0, ms=4.0, exposed=4.0)]}}  # fmt: skip
    assert "16 small all_reduce calls per step at /w/train.py:9" in communication(loop)[0].title
    (tiny,) = communication(_ddp_session(calls=1, buckets=1, nbytes=84, exposed=20.0, ms=20.0))
    assert "latency-bound" in tiny.title and "only 84 bytes" in tiny.fix
    quiet = _ddp_session(calls=1, buckets=1, exposed=1.0)
    assert communication(quiet) == []  # 2% of the step exposed


def test_fsdp_collectives_are_told_fewer_larger_units_and_no_reshard():
    """FSDP2 (fully_shard per block, gloo, 2 ranks): 14 all-gathers and reduce-scatters of
    0.43 MiB a step, 55% of the step exposed, no DDP bucket: no advice at all. Measured: the
    root alone as one unit 1.7-2.0x faster, DDP 4x."""
    gather = dict(_row("all_gather", 13, ms=27.0, exposed=27.0, calls=5.0, nbytes=422510.0),
                  phase="forward")  # fmt: skip
    again = _row("all_gather", 14, ms=21.0, exposed=21.0, calls=4.0, nbytes=526848.0)
    scatter = _row("reduce_scatter", 14, ms=37.0, exposed=37.0, calls=5.0, nbytes=422510.0)
    session = {"step_ms": {"median": 165.0}, "collectives": {
        "total_ms_per_step": 85.0, "exposed_ms_per_step": 85.0, "ddp": [],
        "by_site": [gather, again, scatter]}}  # fmt: skip
    (item,) = communication(session)
    assert "FSDP's collectives hold the step 52% of its time: make fewer" in item.title
    assert any("4 all-gathers in backward" in line for line in item.evidence)
    assert "reshard_after_forward=False" in item.fix and "DistributedDataParallel" in item.fix
    big = {**session, "collectives": {**session["collectives"], "by_site": [
        dict(r, bytes_per_call=64 * 2**20) for r in (gather, scatter)]}}  # (no backward gather)
    (large,) = communication(big)
    assert "moves little" not in large.fix and "keeps each unit" not in large.fix
    assert large.title.endswith("use DDP if the model fits each device")


def test_the_collectives_share_is_of_the_mean_step_everywhere():
    """A CPU DDP run: 2.34 ms of all-reduce per step read "115% of the step" in the advice
    (a detailed step's median) and 77.5% in the ranks summary (the mean step)."""
    row = {"kind": "all_reduce", "site": {"file": "t.py", "line": 5}, "ddp_bucket": True,
           "calls_per_step": 1.0, "ms_per_step": 2.34, "exposed_ms_per_step": 2.34,
           "bytes_per_call": 84.0}  # fmt: skip
    session = {"step_ms": {"median": 1.48, "mean": 3.02},
               "config": {"steps": 300, "detail": {"detailed_count": 10}},
               "tree": {"kind": "root", "total_ms": {"median": 2.03}, "children": []},
               "collectives": {"total_ms_per_step": 2.34, "exposed_ms_per_step": 2.34,
                               "share_pct": 77.5, "by_site": [row],
                               "ddp": [{"timed": True, "buckets_bytes": [84]}]}}  # fmt: skip
    (item,) = communication(session)
    assert "(77% of the step)" in item.evidence[0]


def test_the_ranks_table_counts_every_profiled_step_not_the_kept_records():
    def rank(r):
        return {"environment": {"rank": r, "world_size": 2}, "step_ms": {"median": 2.0},
                "steps": [{"wall_ms": 2.0, "phases": {}}] * 3,
                "config": {"step_records": {"seen": 1380}}}  # fmt: skip

    result = compare_ranks([rank(0), rank(1)])
    assert [r["steps"] for r in result["ranks"]] == [1380, 1380]
