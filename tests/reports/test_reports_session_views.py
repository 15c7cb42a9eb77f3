"""The view seam: Session.tree(), Session._repr_html_() and str(SyncAudit) reach render/ only
through the view registry of session.py, which torchdoctor.views fills."""

from __future__ import annotations

import pytest
from reports_sessions import slow_session

import torchdoctor
from torchdoctor.collect.syncs import sync_audit
from torchdoctor.render.html import render_html
from torchdoctor.render.tree import render_tree_text
from torchdoctor.reports import with_advice
from torchdoctor.session import Session, register_view, view


def test_repr_html_is_the_html_report_with_advice():
    session = Session.from_dict(slow_session())
    assert session["advice"] == []
    page = session._repr_html_()
    assert page == render_html(with_advice(session))
    assert "Compute model.encoder once and reuse it" in page
    assert session["advice"] == []  # showing a session does not change it


def test_tree_is_the_registered_tree_view():
    session = Session.from_dict(slow_session())
    assert session.tree() == render_tree_text(session)
    assert session.tree(max_depth=1) == render_tree_text(session, max_depth=1)


def test_views_are_registered_by_import_torchdoctor():
    assert view("tree") is torchdoctor.views.tree_view
    assert view("html") is torchdoctor.views.html_view
    assert view("sync_table") is torchdoctor.views.sync_table_view


def test_sync_audit_str_goes_through_the_sync_table_view(monkeypatch):
    calls = []
    monkeypatch.setitem(
        torchdoctor.session._VIEWS, "sync_table", lambda r, s: calls.append(r) or "TABLE"
    )
    with sync_audit() as audit:
        pass
    assert str(audit) == "TABLE" and calls == [[]]


def test_unknown_view_names_the_known_ones():
    with pytest.raises(LookupError, match="no view 'nope' is registered.*html"):
        view("nope")
    with pytest.raises(TypeError, match="expects a function"):
        register_view("x", "not callable")
