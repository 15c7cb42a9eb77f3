"""Rule ``communication``: collectives keep the step waiting (exposed >= 10% of the step).

The remedy depends on what was measured, one advice per cause, most specific first:

1. the rank waits for a late rank (``collectives.cross_rank``, filled when rank 0 merged the
   ranks): the cure is balancing the ranks, not tuning communication; saving = the wait;
2. DDP all-reduces each bucket more than once per optimizer step (gradient accumulation
   without ``no_sync``): saving = all-reduce time x (1 - 1/micro-batches);
3. DDP all-reduces under 1 MiB of gradients per round yet waits >= 25% of the step for it:
   latency-bound, do more work per all-reduce (larger batches, accumulation with no_sync);
4. DDP's buckets barely overlap backward (the last bucket's tail is most of their time) with
   one or two buckets of >= 4 MiB of gradients: a smaller ``bucket_cap_mb`` (a quarter of
   them, below the current cap) starts all-reduces earlier; many small
   buckets: a larger one saves per-call latency; ``gradient_as_bucket_view=True`` when off;
5. FSDP's all-gathers and reduce-scatters (no DDP buckets): fewer, larger units when each call
   moves under 1 MiB, ``reshard_after_forward=False`` when backward all-gathers again, DDP when
   the model fits each device;
6. a call site with many small blocking collectives per step: coalesce them or ``async_op``.

Example:
    >>> communication({"collectives": None})
    []
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_count, fmt_ms, pct, tree_step_ms

THRESHOLD = 0.10
#: bytes per call below which a collective is latency-bound (coalescing pays)
SMALL_CALL_BYTES = 64 * 1024
#: gradients per all-reduce round below which splitting buckets cannot pay (latency-bound)
MIN_SPLIT_BYTES = 4 * 2**20
#: gradients per round below which an all-reduce is latency-bound, when its exposed time is at
#: least this share of the step
LATENCY_BYTES = 2**20
LATENCY_SHARE = 0.25
_REFS = ["torch.nn.parallel.DistributedDataParallel", "torch.distributed"]


def _mib(value: float) -> str:
    return f"{value / 2**20:.3g} MiB"


def _balance(late: Any, cross: Mapping[str, Any], evidence: list[str]) -> Advice:
    wait = float(cross["wait_ms_per_step"])
    phase = cross.get("late_phase")
    where = f" (at collectives in {phase})" if phase else ""
    return Advice(
        rule="communication",
        title=f"This rank waits for rank {late} at collectives: balance the ranks' work",
        estimated_saving_ms=wait, confidence="medium",
        evidence=[*evidence, f"waits {fmt_ms(wait)} per step for rank {late}{where}: arrival "
                  "skew, not transfer time"],
        fix=f"Find what rank {late} does more (see the ranks report: its extra phase): uneven "
        "shards or sequence lengths (DistributedSampler, bucketing by length), a slower loader or "
        "node, logging/evaluation/checkpointing on one rank only. Tuning buckets will not help.",
        references=_REFS,
    )  # fmt: skip


def _ddp(section: Mapping[str, Any], rows: list, step: float, evidence: list[str]) -> Advice | None:
    settings = next((d for d in section.get("ddp") or () if d.get("timed")), None)
    if not rows or settings is None:
        return None
    buckets = len(settings.get("buckets_bytes") or settings.get("bucket_sizes_bytes") or ()) or 1
    calls = sum(float(r["calls_per_step"]) for r in rows)
    ms = sum(float(r["ms_per_step"]) for r in rows)
    exposed = sum(float(r["exposed_ms_per_step"]) for r in rows)
    nbytes = sum(float(r["bytes_per_call"] or 0) * float(r["calls_per_step"]) for r in rows)
    rounds = calls / buckets
    evidence = [*evidence, f"DDP: {calls:.3g} bucket all-reduces per step over {buckets} "
                f"bucket(s), {fmt_ms(ms)} in flight, {fmt_ms(exposed)} after backward's compute"]  # fmt: skip
    per_round = nbytes / max(rounds, 1.0)
    view = ""
    if not settings.get("gradient_as_bucket_view") and per_round >= MIN_SPLIT_BYTES:
        view = (f" Also gradient_as_bucket_view=True: gradients live in the buckets, no copy "
                f"of {_mib(per_round)} per all-reduce round and less memory.")  # fmt: skip
    if rounds >= 1.9:
        k = round(rounds)
        return Advice(
            rule="communication", confidence="high",
            title=f"DDP all-reduces gradients {k} times per optimizer step: use no_sync()",
            estimated_saving_ms=exposed * (1 - 1 / k), estimated_saving_pct=pct(
                exposed * (1 - 1 / k), step), evidence=evidence,
            fix="With gradient accumulation, skip the all-reduce of all but the last "
            "micro-batch: `with model.no_sync(): loss.backward()` for the first k-1." + view,
            references=_REFS,
            code="for i, batch in enumerate(micro_batches):\n"
            "    ctx = model.no_sync() if i < len(micro_batches) - 1 else nullcontext()\n"
            "    with ctx:\n        model(batch).sum().backward()",
        )  # fmt: skip
    cap = per_round / 4 / 2**20  # MiB: a quarter of the gradients per bucket
    current = float(settings.get("bucket_cap_bytes") or 25 * 2**20) / 2**20
    if per_round < LATENCY_BYTES and exposed >= LATENCY_SHARE * step:
        title = "DDP's all-reduce is latency-bound: do more work per all-reduce"
        fix = (f"Each step all-reduces only {per_round:.3g} bytes of gradients, yet waits "
               f"{fmt_ms(exposed)} for it: the fixed cost per collective dominates. Use larger "
               "batches per step, or accumulate gradients over micro-batches inside "
               "model.no_sync() and all-reduce once per optimizer step.")  # fmt: skip
    elif exposed >= 0.5 * ms and buckets <= 2 and per_round >= MIN_SPLIT_BYTES and cap < current:
        title = "DDP's all-reduce starts only as backward ends: use smaller buckets"
        fix = (f"DistributedDataParallel(model, bucket_cap_mb={cap:.2g}) (a quarter of the "
               "gradients) so early buckets all-reduce while backward still computes." + view)  # fmt: skip
    elif buckets >= 8 and nbytes / max(calls, 1.0) < 2**20:
        title = "DDP sends many small buckets: use larger buckets"
        fix = ("DistributedDataParallel(model, bucket_cap_mb=50..100): fewer, larger "
               "all-reduces pay the per-call latency less often." + view)  # fmt: skip
    elif view:
        title = "DDP copies gradients into its buckets: gradient_as_bucket_view=True"
        fix = "DistributedDataParallel(model, gradient_as_bucket_view=True):" + view.removeprefix(
            " Also gradient_as_bucket_view=True:"
        )
    else:
        return None
    return Advice(rule="communication", title=title, confidence="low", evidence=evidence,
                  fix=fix, references=_REFS, heat=min(1.0, exposed / step))  # fmt: skip


#: torch.distributed.fsdp.fully_shard on a CPU (gloo, 2 ranks, 4 blocks of 128-512-128, batch 64)
_FSDP_MEASURED = ("measured on a CPU (gloo, 2 ranks, 4 blocks of 128-512-128): every block a "
                  "unit 167-222 ms a step, reshard_after_forward=False 150-169 ms, the root "
                  "alone 82-104 ms, DDP 40-43 ms")


def _fsdp(rows: list, step: float, evidence: list[str]) -> Advice | None:
    """FSDP's collectives: all-gathers (forward, and backward after a reshard) and
    reduce-scatters (the gradients), exposed >= THRESHOLD of the step."""
    gathers = [r for r in rows if r.get("kind") == "all_gather" and not r.get("ddp_bucket")]
    scatters = [r for r in rows if r.get("kind") == "reduce_scatter"]
    exposed = sum(float(r["exposed_ms_per_step"]) for r in gathers + scatters)
    if not gathers or not scatters or exposed < THRESHOLD * step:
        return None
    calls = sum(float(r["calls_per_step"]) for r in gathers + scatters)
    nbytes = sum(float(r.get("bytes_per_call") or 0) * float(r["calls_per_step"])
                 for r in gathers + scatters)  # fmt: skip
    again = [r for r in gathers if r.get("phase") == "backward"]
    per_call = nbytes / max(calls, 1.0)
    evidence = [*evidence, f"FSDP: {fmt_count(calls)} all-gathers and reduce-scatters per step, "
                f"{per_call / 2**20:.2g} MiB a call on average, {fmt_ms(exposed)} exposed"]  # fmt: skip
    fix = []
    if per_call < LATENCY_BYTES:
        fix.append("Each call moves little, so its fixed cost dominates: make fewer, larger "
                   "FSDP units (fully_shard a list of blocks as one unit, or fewer levels) "
                   "rather than every block.")  # fmt: skip
    if again:
        ms = sum(float(r["exposed_ms_per_step"]) for r in again)
        evidence.append(f"{fmt_count(sum(float(r['calls_per_step']) for r in again))} "
                        f"all-gathers in backward ({fmt_ms(ms)}): the parameters gathered in "
                        "forward were freed and are gathered again")  # fmt: skip
        fix.append("fully_shard(..., reshard_after_forward=False) keeps each unit's parameters "
                   "gathered from forward to backward: no all-gather in backward, at the memory "
                   "of the unsharded parameters.")  # fmt: skip
    fix.append("If the model, its gradients and its optimizer state fit on each device, "
               "DistributedDataParallel needs one all-reduce per gradient bucket instead "
               f"({_FSDP_MEASURED}).")  # fmt: skip
    return Advice(
        rule="communication", confidence="low",
        title=f"FSDP's collectives hold the step {pct(exposed, step):.0f}% of its time: "
        + ("make fewer, larger units" if per_call < LATENCY_BYTES else "keep the parameters "
           "gathered for backward" if again else "use DDP if the model fits each device"),
        evidence=evidence, fix=" ".join(fix), references=[*_REFS, "torch.distributed.fsdp"],
        heat=min(1.0, exposed / step),
        code="for block in model.blocks:  # before: each block a unit\n    fully_shard(block)\n"
        "for i in range(0, len(model.blocks), 4):  # after: 4 blocks a unit, kept for backward\n"
        "    fully_shard(list(model.blocks[i:i + 4]), reshard_after_forward=False)",
    )  # fmt: skip


def _coalesce(rows: list, step: float, evidence: list[str]) -> Advice | None:
    small = [r for r in rows if not r.get("ddp_bucket") and float(r["calls_per_step"]) >= 4
             and float(r.get("bytes_per_call") or 0) < SMALL_CALL_BYTES
             and float(r["exposed_ms_per_step"]) >= 0.05 * step]  # fmt: skip
    if not small:
        return None
    row = max(small, key=lambda r: r["exposed_ms_per_step"])
    site = row.get("site") or {}
    where = f"{site.get('file')}:{site.get('line')}"
    return Advice(
        rule="communication", confidence="medium",
        title=f"{fmt_count(row['calls_per_step'])} small {row['kind']} calls per step at {where}: "
        "coalesce them",
        evidence=[*evidence, f"{where}: {fmt_count(row['calls_per_step'])} calls per step of "
                  f"{float(row.get('bytes_per_call') or 0):.3g} bytes, "
                  f"{fmt_ms(row['exposed_ms_per_step'])} blocking"],
        fix="Stack the values into one tensor and make one call (torch.stack, then one "
        "all_reduce), or launch with async_op=True and wait() only when the result is needed.",
        references=_REFS, heat=min(1.0, float(row["exposed_ms_per_step"]) / step),
    )  # fmt: skip


def communication(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when collectives' exposed time is >= 10% of the step (see the module text).

    Example:
        >>> row = {"kind": "all_reduce", "site": {"file": "t.py", "line": 5},
        ...        "ddp_bucket": False, "calls_per_step": 8.0, "ms_per_step": 3.0,
        ...        "exposed_ms_per_step": 3.0, "bytes_per_call": 4.0}
        >>> s = {"step_ms": {"median": 10.0}, "collectives": {"total_ms_per_step": 3.0,
        ...      "exposed_ms_per_step": 3.0, "by_site": [row], "ddp": []}}
        >>> communication(s)[0].title
        '8 small all_reduce calls per step at t.py:5: coalesce them'
    """
    section = session.get("collectives") or {}
    # (the collectives are timed in every step: their share is of the mean step, as the
    # section's share_pct and the ranks table say; a detailed step's median made a DDP run's
    # 2.34 ms "115% of the step" beside "77.5%")
    all_steps = session.get("step_ms") or {}
    step = float(all_steps.get("mean") or all_steps.get("median") or 0.0) or tree_step_ms(session)
    exposed = float(section.get("exposed_ms_per_step") or 0.0)
    if step <= 0 or exposed < THRESHOLD * step:
        return []
    total = float(section.get("total_ms_per_step") or 0.0)
    rows = list(section.get("by_site") or ())
    evidence = [f"collectives: {fmt_ms(total)} per step ({pct(total, step):.0f}% of the step), "
                f"{fmt_ms(exposed)} exposed ({pct(exposed, step):.0f}%)"]  # fmt: skip
    cross = section.get("cross_rank") or {}
    late = cross.get("late_rank")
    if late is not None and late != (session.get("environment") or {}).get("rank"):
        if float(cross.get("wait_ms_per_step") or 0.0) >= 0.5 * exposed:
            return [_balance(late, cross, evidence)]
    ddp_rows = [r for r in rows if r.get("ddp_bucket")]
    advice = (_ddp(section, ddp_rows, step, evidence) or _fsdp(rows, step, evidence)
              or _coalesce(rows, step, evidence))  # fmt: skip
    if advice is None:
        return []
    if late is None and not cross:
        advice.evidence.append("part of the exposed time may be waiting for slower ranks: the "
                               "ranks report (rank 0) tells")  # fmt: skip
    return [advice]
