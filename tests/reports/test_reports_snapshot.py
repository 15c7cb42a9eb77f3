"""Snapshot tests: the Markdown and HTML reports of a fixed crafted session.

The module tree section comes from the profiler's renderer and is replaced by a stub here, so
these snapshots change only when this report's own layout or the advice rules change. To
accept an intended change: ``TD_UPDATE_SNAPSHOTS=1 pytest tests/reports/test_reports_snapshot.py``
and review the diff of tests/reports/snapshots/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from reports_sessions import slow_session

import torchdoctor.render.markdown as markdown_module
from torchdoctor.render.html import render_html
from torchdoctor.render.markdown import render_markdown
from torchdoctor.reports import with_advice

SNAPSHOTS = Path(__file__).parent / "snapshots"


@pytest.fixture
def session(monkeypatch):
    monkeypatch.setattr(markdown_module, "_tree_text", lambda s: "(module tree stub)")
    data = slow_session()
    data["created"] = "2026-11-22T08:30:00Z"
    data["tool"] = "torchdoctor 0.1.0"
    return with_advice(data)


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("TD_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
        pytest.skip(f"snapshot {name} updated")
    assert path.exists(), f"missing snapshot {path}; create it with TD_UPDATE_SNAPSHOTS=1"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from its snapshot; see the module docstring"


def test_markdown_snapshot(session):
    check_snapshot("slow_session.md.snap", render_markdown(session))


def test_html_snapshot(session):
    page = render_html(session)
    # the inlined assets are tested in the browser; the snapshot covers the document itself
    page = re.sub(r"<style>.*?</style>", "<style>(report.css)</style>", page, flags=re.S)
    page = re.sub(r"<script>\n.*?</script>", "<script>(report.js)</script>", page, flags=re.S)
    check_snapshot("slow_session.html.snap", page)
