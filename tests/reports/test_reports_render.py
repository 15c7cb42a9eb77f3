"""Renderers: Markdown sections, HTML structure, console, JSON, trace, write_reports, CLI."""

from __future__ import annotations

import json
import re

import pytest
from reports_sessions import clean_session, node, slow_session

from torchdoctor.cli import main
from torchdoctor.render.console import render_console
from torchdoctor.render.html import render_html, script_json
from torchdoctor.render.json import render_json
from torchdoctor.render.markdown import render_markdown
from torchdoctor.render.trace import render_trace
from torchdoctor.reports import render_report, with_advice, write_reports
from torchdoctor.session import Session

EVIL = "<img src=x onerror=alert(1)>"
SECTIONS = [
    "## Summary",
    "## Breakdown",
    "## Core problems",
    "## Prioritized advice",
    "## Code changes",
    "## Next actions",
]


def test_markdown_has_the_seed_sections_in_order():
    text = render_markdown(with_advice(slow_session()))
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "### Priority 1:" in text
    assert "**Estimated gain:**" in text
    assert "```python" in text  # code changes
    assert "train.py:88" in text  # sync table with source lines


def test_markdown_embeds_the_profilers_tree_text():
    from torchdoctor.render.tree import render_tree_text

    session = with_advice(slow_session())
    tree_text = render_tree_text(session)
    assert tree_text.strip() and tree_text.strip() in render_markdown(session)


def test_markdown_report_computes_advice_when_session_has_none():
    session = slow_session()
    assert session["advice"] == []
    assert "Compute model.encoder once and reuse it" in render_report(session, "md")


def test_clean_session_report_says_nothing_to_fix():
    text = render_markdown(clean_session())
    assert "No rule found a problem" in text


def outside_code_blocks(markdown: str) -> str:
    """Markdown without fenced code blocks and code spans (both literal, never HTML)."""
    without_blocks = re.sub(r"(?ms)^(`{3,}).*?^\1\s*$", "", markdown)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", without_blocks)


def test_markdown_escapes_session_strings_outside_code_blocks():
    text = render_markdown(with_advice(slow_session(evil=EVIL)))
    prose = outside_code_blocks(text)
    assert EVIL not in prose and "<img" not in prose
    assert "&lt;img src=x onerror=alert(1)&gt;" in prose


def test_html_escapes_session_strings():
    page = render_html(with_advice(slow_session(evil=EVIL)))
    assert EVIL not in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # static tables and advice
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in page  # chart data


def test_html_chart_data_cannot_close_the_script_element():
    session = slow_session(evil="</script><script>alert(1)</script>")
    page = render_html(with_advice(session))
    assert page.count("</script>") == 2  # the data element and the report script only
    data = page.split('id="td-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["tree"]["children"][0]["children"][0]["path"].startswith(
        "model.</script>"
    )
    assert "\\u2028" in script_json("\u2028")


def test_html_is_self_contained_and_offline():
    page = render_html(with_advice(slow_session()))
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for needle in ('src="http', "src='http", 'href="http', "@import", "url(http"):
        assert needle not in page
    for element in ('id="chart"', 'id="phase-bar"', 'id="sync-table"', 'id="advice-list"'):
        assert element in page


def test_console_report_has_tree_phases_syncs_and_advice():
    text = render_console(with_advice(slow_session()), width=120)
    for needle in ("layers[0-5]", "optimizer", "Host syncs", "train.py:88", "Top advice"):
        assert needle in text


def test_json_round_trips_through_session_load(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(render_json(with_advice(slow_session())))
    loaded = Session.load(path)
    assert loaded["advice"][0]["priority"] == 1
    assert loaded["tree"] == slow_session()["tree"]


def test_json_rejects_nan():
    session = slow_session()
    session["step_ms"]["median"] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        render_json(session)


def test_trace_has_one_complete_event_per_timeline_entry():
    session = slow_session()
    events = json.loads(render_trace(session))["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert len(complete) == len(session["timeline"])
    assert {e["name"] for e in complete} == {t["name"] for t in session["timeline"]}
    forward = [e for e in complete if e["cat"] == "forward"]
    assert len({e["tid"] for e in forward}) == 1
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert "backward (modules)" in names


def test_write_reports_writes_each_format(tmp_path):
    paths = write_reports(slow_session(), tmp_path, ("md", "html", "json", "trace", "console"))
    assert [p.name for p in paths] == [
        "torchdoctor-report.md",
        "torchdoctor-report.html",
        "torchdoctor-report.json",
        "torchdoctor-report.trace.json",
        "torchdoctor-report.txt",
    ]
    saved = json.loads((tmp_path / "torchdoctor-report.json").read_text())
    assert saved["advice"] and saved["advice"][0]["priority"] == 1


def test_write_reports_rejects_unknown_format_before_writing(tmp_path):
    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        write_reports(slow_session(), tmp_path / "out", ("md", "pdf"))
    assert not (tmp_path / "out").exists()


def test_write_reports_attaches_lint_findings(tmp_path):
    finding = {"code": "TD777", "message": "m", "path": "proj/train.py", "line": 88}
    write_reports(slow_session(), tmp_path, ["json"], lint=[finding])
    saved = json.loads((tmp_path / "torchdoctor-report.json").read_text())
    assert [f["code"] for f in saved["lint"]] == ["TD777"]
    # line 88 is a recorded sync line: the finding joins that advice (one advice per line)
    assert any("TD777" in a["references"] for a in saved["advice"])


@pytest.mark.parametrize("fmt", ["md", "html", "json", "trace", "console"])
def test_report_command_writes_each_format(tmp_path, fmt):
    source = tmp_path / "s.json"
    Session.from_dict(slow_session()).save(source)
    out = tmp_path / f"r.{fmt}"
    assert main(["report", str(source), "--format", fmt, "-o", str(out)]) == 0
    assert out.read_text() == render_report(Session.load(source), fmt)


def test_report_command_infers_format_and_prints(tmp_path, capsys):
    source = tmp_path / "s.json"
    Session.from_dict(slow_session()).save(source)
    assert main(["report", str(source), "-o", str(tmp_path / "x.trace.json")]) == 0
    assert "traceEvents" in (tmp_path / "x.trace.json").read_text()
    assert main(["report", str(source), "-f", "md"]) == 0
    assert "## Prioritized advice" in capsys.readouterr().out


def test_report_command_bad_file_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["report", str(bad)]) == 2
    assert "schema_version" in capsys.readouterr().err


def test_report_reanalyze_replaces_the_advice_a_session_was_saved_with(tmp_path, capsys):
    """A session keeps the advice of the version that wrote it; --reanalyze applies this
    version's rules to the measurements it holds."""
    data = with_advice(slow_session())
    data["advice"] = [{**data["advice"][0], "title": "advice of an older torchdoctor"}]
    source = tmp_path / "s.json"
    Session.from_dict(data).save(source)
    assert main(["report", str(source), "-f", "md"]) == 0
    assert "advice of an older torchdoctor" in capsys.readouterr().out
    assert main(["report", str(source), "-f", "md", "--reanalyze"]) == 0
    text = capsys.readouterr().out
    assert "advice of an older torchdoctor" not in text
    assert "Compute model.encoder once and reuse it" in text


def test_a_script_that_died_before_its_first_step_gets_no_all_clear():
    """A script dying at import (a missing module) printed '8.1 ms per step ... No rule found a
    problem worth fixing.': every report now says there was no step to judge."""
    session = {**clean_session(), "advice": [], "steps": [],
               "error": "Traceback (most recent call last):\nModuleNotFoundError: No module named 'six'"}  # fmt: skip
    for text in (render_console(session), render_markdown(session), render_html(session)):
        assert "No advice: the script stopped before its first step was complete" in text
        assert "No rule found a problem" not in text
    assert "No rule found a problem" in render_console({**clean_session(), "advice": []})


def test_large_counts_read_without_an_exponent():
    """An LSTM cell called 5,180 times a step printed `5.18e+03` in the tree's calls column."""
    from torchdoctor.render.tree import render_tree_text

    session = slow_session()
    leaf = next(c for c in session["tree"]["children"] if c.get("kind") == "module")
    leaf["calls_per_step"] = 5180.0
    text = render_tree_text(session)
    assert "5,180" in text and "e+0" not in text


def test_the_self_rows_phase_is_not_pinned_on_a_line_that_does_not_hold_it():
    """`(self)  optimizer 3.05 ms → train.py:13` read as if the optimizer time were at a
    logging line of the other phase: the pointer shows only when its line holds most of the
    row (the Hot lines table lists the rest)."""
    from torchdoctor.render.tree import _label

    node = {"kind": "self", "name": "(self)", "path": "(self)", "total_ms": {"mean": 5.6},
            "phases_ms": {"optimizer": 3.05, "other": 1.8},
            "hot_lines": [{"location": "train.py:13", "total_ms": {"mean": 1.8}}]}  # fmt: skip
    assert _label(node) == "(self)  optimizer 3.05 ms"
    node["hot_lines"][0]["total_ms"] = {"mean": 4.0}
    assert _label(node) == "(self)  optimizer 3.05 ms; → train.py:13"
    del node["phases_ms"]
    assert _label(node) == "(self)  → train.py:13"


def test_a_self_row_split_between_two_phases_names_both_instead_of_a_minor_line():
    """pytorch/examples' VAE: its root (self) row, 10.5 ms, held data 4.72 and optimizer 2.85 ms
    and read as its line main.py:81, which held little of it."""
    from torchdoctor.render.tree import _label

    node = {"kind": "self", "name": "(self)", "path": "(self)", "total_ms": {"mean": 10.5},
            "phases_ms": {"data": 4.72, "optimizer": 2.85, "other": 0.4},
            "hot_lines": [{"location": "main.py:81", "total_ms": {"mean": 1.2}}]}  # fmt: skip
    assert _label(node) == "(self)  data 4.72 ms, optimizer 2.85 ms"


def test_the_tree_drops_columns_rather_than_cut_a_header_when_a_hidden_row_is_long():
    """The module column keeps the width of its longest row, shown or not (a row under
    ``min_pct``): the fit counted only the shown rows, so rich cut every other header ("tota…",
    "% pa…"; the README's demo table ended in "cal…" at 100 columns)."""
    from torchdoctor.render.tree import render_tree_text

    session = slow_session()
    encoder = session["tree"]["children"][0]["children"][0]
    encoder["children"] = [node("model.encoder.a_long_submodule_name_below_the_cutoff", 0.001, 0.001)]
    for width in (80, 100, 120):
        text = render_tree_text(session, width=width, min_pct=1.0)
        header = next(line for line in text.splitlines() if line.startswith("module / region"))
        assert "…" not in header and "total ms" in header, (width, header)
        assert max(len(line) for line in text.splitlines()) <= width
        assert "a_long_submodule_name" not in text  # (hidden: under 1% of the step)


def test_a_whole_run_session_reads_as_the_whole_run_not_one_step_after_a_warm_up():
    """PatchTST crashed before its first optimizer step: the Summary said "15,806 ms per step
    (median 15,806 ms, middle half ...), 1 step(s) profiled after 1 warm-up" where the tree said
    "in the whole run, one step (no step boundary was seen)"; a one-step run with a boundary
    keeps the usual line (near miss)."""
    base = clean_session()
    whole = {**base, "steps": [{"ms": 10.0}], "config": {**base["config"], "steps": 1,
                                                     "step_boundary": "whole_run", "warmup": 1}}  # fmt: skip
    text = render_markdown(whole)
    assert "in the whole run, one step (no step boundary was seen)" in text.split("## Breakdown")[0]
    assert "warm-up" not in text.split("## Breakdown")[0]
    one = {**base, "steps": [{"ms": 10.0}], "config": {**base["config"], "steps": 1, "warmup": 1}}
    assert "1 step(s) profiled after 1 warm-up" in render_markdown(one)


def test_a_models_part_called_outside_the_model_is_named_by_its_path_in_it():
    """zuko's NSF (clients round 21): `flow(c).log_prob(x)` runs each transform's `hyper`
    network after the flow's forward returned: three rows straight under the step, all
    named `hyper`; they read as `transform.transforms.0.hyper` ... now."""
    from torchdoctor.render.tree import render_tree_text

    session = slow_session()
    leaf = next(c for c in session["tree"]["children"] if c.get("kind") == "module")
    top, part = leaf["path"], {**leaf, "name": "hyper", "path": "transform.transforms.1.hyper"}
    session["tree"]["children"].append(part)
    text = render_tree_text(session)
    assert "─ transform.transforms.1.hyper " in text and "─ hyper " not in text
    assert f"─ {top} " in text  # (the model, its path its name: as before)
    nested = {**part, "children": [{**leaf, "name": "fc", "path": "transform.transforms.1.hyper.fc"}]}
    session["tree"]["children"][-1] = nested  # (below a row: its name, as before)
    assert "─ fc " in render_tree_text(session)
