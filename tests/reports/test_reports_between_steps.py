"""The "Between steps" section in every report format: present with sampled lines, absent
without them."""

from reports_sessions import between_steps_session, slow_session

from torchdoctor.render.console import render_console
from torchdoctor.render.html import render_html
from torchdoctor.render.markdown import render_markdown


def test_sampled_lines_show_in_every_format():
    session = between_steps_session()
    console = render_console(session, width=140)
    assert "Between steps" in console and "train.py:90" in console
    markdown = render_markdown(session)
    assert "## Between steps" in markdown
    assert "| train.py:90 | 35 |" in markdown and "torch.save(model.state_dict(), p)" in markdown
    assert '<section id="between-steps">' in render_html(session)


def test_no_sampled_lines_no_section():
    session = slow_session()
    assert "Between steps" not in render_console(session, width=140)
    assert "## Between steps" not in render_markdown(session)
    assert "between-steps" not in render_html(session)
