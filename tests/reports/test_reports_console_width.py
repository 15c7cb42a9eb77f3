"""The console report at 80 columns (a common terminal): nothing cut, snapshot.

Columns are dropped by priority (the tree's bar and % of parent first; the sync table's phase
and kind) and long text wraps with its indent; headers are never cut. To accept an intended
change: ``TD_UPDATE_SNAPSHOTS=1 pytest tests/reports/test_reports_console_width.py``.
"""

from __future__ import annotations

from reports_sessions import library_session
from test_reports_snapshot import check_snapshot

from torchdoctor.render.console import render_console
from torchdoctor.reports import with_advice


def _report(width: int) -> str:
    return render_console(with_advice(library_session()), width=width)


def test_console_report_fits_80_columns_without_cut_headers():
    text = _report(80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for header in ("module / region", "total ms", "% step", "fwd ms", "bwd ms", "calls"):
        assert header in text
    for header in ("where", "source", "per step", "cost"):
        assert header in text
    assert "from train.py:120" in text  # the user's line of the library sync


def test_console_report_keeps_every_column_when_wide():
    text = _report(140)
    for header in ("% parent", "phase", "kind"):
        assert header in text


def test_console_report_80_columns_snapshot():
    check_snapshot("slow_session.console80.snap", _report(80))
