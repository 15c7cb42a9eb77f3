"""The sync table renders records grouped by line, predicted vs measured."""

from __future__ import annotations

from torchdoctor.render.syncs import format_sync_table, group_by_line, render_sync_table


def _record(kind, line, per_step, stall=None, file="/abs/train.py", op="loss.item()"):
    return {"kind": kind, "op": op, "file": file, "line": line, "function": "train",
            "count": int(per_step * 4), "per_step": per_step, "phase": "forward",
            "stall_ms": stall, "would_sync_on_cuda": True}  # fmt: skip


def test_rows_are_grouped_by_line_and_sorted_by_frequency():
    records = [
        _record("item", 10, 1.0),
        _record("cpu", 20, 2.0, op="x.cpu().tolist()"),
        _record("tolist", 20, 2.0, op="x.cpu().tolist()"),
    ]
    rows = group_by_line(records)
    assert [(r["line"], r["kinds"], r["per_step"]) for r in rows] == [
        (20, "cpu+tolist", 4.0),
        (10, "item", 1.0),
    ]
    text = format_sync_table(records, {"mode": "fast", "device": "cpu", "overhead_pct": 2.5})
    lines = text.splitlines()
    assert lines[0].startswith("Host-device syncs: 2 source line(s), 5 per step (CPU run")
    assert "train.py:20" in lines[1] and "x.cpu().tolist()" in lines[1]
    assert lines[1].endswith("(would sync on CUDA)")
    assert "overhead ~2.5% (estimated)" in text


def test_measured_stalls_are_shown_per_step_and_empty_tables_say_so():
    text = format_sync_table([_record("item", 3, 1.0, stall=0.75)])
    assert "stall 0.75 ms/step" in text and "would sync" not in text
    assert format_sync_table([]).startswith("No host-device syncs found.")


def test_rich_table_escapes_nothing_and_truncates_long_lists():
    records = [_record("item", i, 1.0, op=f"[bold]x{i}[/bold].item()") for i in range(25)]
    table = render_sync_table({"syncs": records, "sync_audit": None}, max_lines=5)
    assert table.row_count == 5
    assert "20 more line(s)" in str(table.caption)
    cells = [str(c) for c in table.columns[1]._cells]
    assert cells[0].startswith("[bold]x")  # session text is shown literally, not as markup
