"""The standard views of a Session, registered into ``session.py``'s view registry.

The data model (``Session.tree()``, ``Session._repr_html_()``) and collect/ (``str(SyncAudit)``)
never import render/: they ask :func:`torchdoctor.session.view` for a view by name, and this
module, imported by ``import torchdoctor``, registers render/'s functions under those names
(dependency inversion, one seam). Each is imported on first use, so ``import torchdoctor`` stays
cheap.

========== ============================================== ===========================
view       function                                       used by
========== ============================================== ===========================
tree       ``render.tree.render_tree_text``               ``Session.tree()``
html       ``reports.render_report(session, "html")``     ``Session._repr_html_()``
sync_table ``render.syncs.format_sync_table``             ``str(SyncAudit)``
record_run ``history.record_run`` (returns the run's id)  ``torchdoctor.profile``
========== ============================================== ===========================

The HTML view is the report with its advice (computed when the session has none), so a session
shown in Jupyter carries the same advice as ``torchdoctor report``.

Example:
    >>> from torchdoctor.session import view
    >>> view("sync_table")([], None).splitlines()[0]
    'No host-device syncs found.'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.session import register_view


def tree_view(session: Mapping[str, Any], **options: Any) -> str:
    """The ``"tree"`` view: the module tree as plain console text.

    Example:
        >>> tree_view({"tree": None})
        '(no module tree recorded)'
    """
    from torchdoctor.render.tree import render_tree_text

    return render_tree_text(session, **options)


def html_view(session: Mapping[str, Any]) -> str:
    """The ``"html"`` view: the self-contained HTML report, advice included.

    Example:
        >>> html_view({"schema_version": 1, "label": "nb", "tree": None}).startswith("<!doctype")
        True
    """
    from torchdoctor.reports import render_report

    return render_report(session, "html")


def sync_table_view(
    records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None = None
) -> str:
    """The ``"sync_table"`` view: sync records as a plain-text table, one line per source line.

    Example:
        >>> sync_table_view([], None).strip()
        'No host-device syncs found.'
    """
    from torchdoctor.render.syncs import format_sync_table

    return format_sync_table(records, summary)


def record_run_view(session: Mapping[str, Any], **options: Any) -> int | None:
    """The ``"record_run"`` view: append the run to the run history (``torchdoctor history``).

    ``torchdoctor.profile`` (in collect/) reaches the history, which sits above the pipeline
    (it summarises with analyze/), through this seam.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "h.sqlite")
        >>> record_run_view({"label": "demo", "step_ms": {"median": 1.0}}, script=None,
        ...                 kind="profile", path=path) >= 1
        True
    """
    from torchdoctor.history import record_run

    return record_run(session, **options)


register_view("tree", tree_view)
register_view("html", html_view)
register_view("sync_table", sync_table_view)
register_view("record_run", record_run_view)
