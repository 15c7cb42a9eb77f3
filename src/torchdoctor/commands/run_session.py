"""The session `torchdoctor run` makes: its profiler, and what it adds to the profiler's session.

Shared by the script's own process (``commands/run.py``) and the processes it starts
(``commands/run_children.py``): the profiler built from `run`'s options, the sync records of
its own audit, and the collectives section.

Example:
    >>> import argparse
    >>> args = argparse.Namespace(warmup=1, max_steps=None, step_fn=None)
    >>> make_profiler(args, full=False, label="train.py").step_boundary
    'auto'
"""

from __future__ import annotations

import argparse
from typing import Any

from torchdoctor.collect.schedule import DETAIL_BUDGET


def make_profiler(args: argparse.Namespace, *, full: bool, label: str) -> Any:
    """The profiler `run` drives, from its options (the script's process and its children).

    Example:
        >>> args = argparse.Namespace(warmup=2, max_steps=None, step_fn=None, detail="always")
        >>> profiler = make_profiler(args, full=True, label="train.py")
        >>> profiler.warmup, profiler.hot_lines
        (2, True)
    """
    from torchdoctor.collect.profiler import Profiler

    return Profiler(
        None, syncs=False, warmup=args.warmup, max_steps=args.max_steps,
        step_boundary="manual" if args.step_fn else "auto", label=label, memory=full,
        backward=full, hot_lines=full and not getattr(args, "no_hot_lines", False),
        detail=getattr(args, "detail", "windows"), window=getattr(args, "detail_window", 5),
        period_steps=max(getattr(args, "detail_period", 100), getattr(args, "detail_window", 5)),
        period_s=getattr(args, "detail_period_s", 60.0),
        detail_budget=getattr(args, "detail_budget", 100 * DETAIL_BUDGET) / 100,
    )  # fmt: skip


def add_run_fields(session: Any, args: argparse.Namespace, audit: Any) -> None:
    """What `run` adds to the profiler's session (the final one and each checkpoint): the
    step function's boundary and the records of its own sync audit.

    Example:
        >>> from torchdoctor.collect.syncs import sync_audit
        >>> from torchdoctor.session import Session
        >>> session, audit = Session.new(label="t"), sync_audit()
        >>> session["config"] = {"steps": 0}
        >>> add_run_fields(session, argparse.Namespace(step_fn=None, warmup=0), audit)
        >>> session["config"]["syncs"], session["syncs"]
        (True, [])
    """
    config = session["config"]
    config["syncs"] = True
    module = getattr(args, "module", None)  # (the script's command line: `tune` is told it)
    script = ["-m", module] if module else [getattr(args, "script", None)]
    if all(isinstance(part, str) for part in script):
        config["script_command"] = [*script, *map(str, getattr(args, "script_args", None) or ())]
    if args.step_fn:
        config["step_boundary"] = "step_fn" if session.get("steps") else "whole_run"
        config["notes"] = [f"each call of {args.step_fn} ends a step", *config.get("notes", [])]
    session["syncs"] = _sync_records(audit, session, args.warmup)
    session["sync_audit"] = audit.summary()


def _sync_records(audit: Any, session: Any, warmup: int) -> list[dict[str, Any]]:
    from torchdoctor.collect.long_steps import sync_outliers

    steps = session["config"].get("steps", len(session.get("steps") or []))
    if session["config"].get("step_boundary") == "whole_run":
        return audit.records(first_step=0, num_steps=1)
    if steps == 0:
        return audit.records(first_step=0)
    audited = (session["config"].get("detail") or {}).get("audited_count") or None
    return audit.records(
        first_step=warmup, num_steps=steps, audited_steps=audited, **sync_outliers(session, warmup)
    )


def attach_collectives(args: argparse.Namespace, timer: Any, session: Any) -> None:
    """The ``collectives`` section when the script used torch.distributed; the store it
    rendezvoused through is kept on ``args.process_group_store`` for the merge of ranks.

    Example:
        >>> from torchdoctor.collect.collectives import CollectiveTimer
        >>> session, args = {}, argparse.Namespace()
        >>> attach_collectives(args, CollectiveTimer(), session)  # no torch.distributed used
        >>> session, args.process_group_store
        ({}, None)
    """
    from torchdoctor.collect.collectives_summary import summarize_collectives

    args.process_group_store = timer.store
    if timer.records or timer.ddp or timer.store is not None:
        session["collectives"] = summarize_collectives(timer, session)


def write_or_keep(session: Any, out: str, **options: Any) -> tuple[Any, str | None]:
    """Write the session to ``out`` (``reports.write_session``, ``options`` passed on); when
    that folder refuses it (a full disk, a path the OS will not create although the check
    before the run let it pass: /proc, a read-only mount seen late), write it to a new
    temporary folder instead, so the run's figures are not lost. Returns (the session's path
    or None, what to tell the user or None).

    Example:
        >>> import tempfile
        >>> from torchdoctor.session import Session
        >>> path, said = write_or_keep(Session.new(label="t"), tempfile.mkdtemp(), reports=())
        >>> path.name, said
        ('session.json', None)
    """
    import tempfile

    from torchdoctor.reports import write_session

    try:
        return write_session(session, out, **options), None
    except OSError as exc:
        said = f"could not write the session to {out}: {exc}"
    try:
        kept = write_session(session, tempfile.mkdtemp(prefix="torchdoctor-out-"), **options)
    except OSError as exc:
        return None, f"{said}; nor to a temporary folder: {exc}"
    return kept, f"{said}; written to {kept.parent} instead"
