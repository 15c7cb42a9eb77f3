"""A tree whose detailed steps the profiler made much slower (cleanrl's DQN: 0.1 ms layers, a
detailed step 188% slower than a light one) says so under the headline, in the console and in
the Markdown summary; a modest cost only in the notes."""

import re

from reports_sessions import slow_session

from torchdoctor.render.console import render_console
from torchdoctor.render.markdown import render_markdown


def _windowed(overhead_pct):
    session = slow_session()
    config = session.setdefault("config", {})
    config["steps"] = 400
    config["detail"] = {"mode": "windows", "detailed_count": 20}
    config["profiler_overhead"] = {"overhead_pct": overhead_pct, "source": "measured"}
    return session


def test_a_heavy_profiler_cost_is_said_under_the_headline():
    session = _windowed(188.0)
    console = " ".join(render_console(session, width=200).split())
    assert "the profiler makes a detailed step here ~188% slower (measured" in console
    assert "**Caveat:** the profiler makes a detailed step here ~188% slower" in (
        render_markdown(session)
    )


def test_a_modest_profiler_cost_is_left_to_the_notes():
    session = _windowed(12.0)
    assert "makes a detailed step here" not in render_console(session, width=200)
    assert "**Caveat:**" not in render_markdown(session)


def test_phase_shares_are_of_the_detailed_step_they_come_from():
    # the phases come from detailed steps 3x the light median: the Markdown summary gave
    # "forward 4.28 ms (256%)" on a Whisper decoding; its shares are the console's
    session = _windowed(188.0)
    session["step_ms"] = {"median": 0.4 * session["tree"]["total_ms"]["median"]}
    line = next(x for x in render_markdown(session).splitlines() if "**Phases:**" in x)
    shares = [float(pct) for pct in re.findall(r"\((\d+)%\)", line)]
    assert 98 <= sum(shares) <= 102 and "(of a detailed step, " in line, line


def test_the_phase_tables_shares_are_of_the_detailed_step_too():
    # nanoGPT under detail windows: the Breakdown's table said forward 87% + backward 51% of
    # the light step while its summary line said 58% + 34% of the detailed step
    from torchdoctor.render.html import render_html

    session = _windowed(188.0)
    session["step_ms"] = {"median": 0.4 * session["tree"]["total_ms"]["median"]}
    markdown = render_markdown(session).split("| phase | per step | % of a detailed step |")[1]
    rows = markdown.split("\n\n")[0].splitlines()[2:]
    assert 98 <= sum(float(r.rsplit("|", 2)[1].strip(" %")) for r in rows) <= 102, rows
    table = render_html(session).split('id="phase-table"')[1].split("</table>")[0]
    assert "% of a detailed step" in table
    shares = [float(s) for s in re.findall(r'class="num">(\d+)%</td>', table)]
    assert 98 <= sum(shares) <= 102, shares
