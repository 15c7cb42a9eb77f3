"""The HTML report in a real headless Chromium: scripts run without console errors, the chart,
phase bar and tables render, escaped names never execute; a screenshot is saved.

Skips only when no Chromium is installed and CI is not set; under CI a missing browser fails.
Set TD_CHROMIUM to point at a specific browser binary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from reports_sessions import slow_session

from torchdoctor.render.html import render_html
from torchdoctor.reports import with_advice

EVIL = "<img src=x onerror=alert(1)>"
EVIL_DOM = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
TIMEOUT_S = 120


def find_chromium() -> str | None:
    override = os.environ.get("TD_CHROMIUM")
    if override:
        return override
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(
                "CI is set but no Chromium was found: .ci/run must install Debian's "
                "chromium (apt-get install -y chromium) or set TD_CHROMIUM"
            )
        pytest.skip(
            "no Chromium installed (apt-get install -y chromium, or set TD_CHROMIUM); "
            "the browser test runs in CI"
        )
    return path


def run_chromium(chromium: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp / 'profile'}",
        *extra,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def console_messages(stderr: str) -> list[str]:
    """Page console output (log, warning, error, uncaught exception, CSP violation)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report(chromium, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    session = slow_session(evil=EVIL)
    session["syncs"][1]["op"] = EVIL_DOM
    page = tmp / "report.html"
    page.write_text(render_html(with_advice(session)), encoding="utf-8")
    result = run_chromium(chromium, tmp, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp, page, result.stdout, result.stderr


def test_scripts_run_without_console_errors(report):
    _, _, dom, stderr = report
    assert 'data-rendered="true"' in dom, "the report script did not finish"
    assert console_messages(stderr) == []
    errors = re.search(r'<div id="td-errors">(.*?)</div>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == ""


def test_chart_and_tables_render(report):
    _, _, dom, _ = report
    nodes = int(
        re.search(
            r'id="chart"[^>]*data-nodes="(\d+)"|data-nodes="(\d+)"[^>]*id="chart"', dom
        ).group(1)
        or 0
    )
    assert nodes >= 10
    assert len(re.findall(r'class="node( self)?"', dom)) == nodes
    assert 'data-path="model.decoder"' in dom
    sync_rows = dom.split('id="sync-table"', 1)[1].split("</table>", 1)[0].count("<tr>")
    assert sync_rows == 1 + 3  # header + one row per sync line
    assert dom.count('class="phase phase-') == 5
    assert len(re.findall(r'<li data-rule="', dom)) >= 5


def test_escaped_names_never_execute(report):
    _, _, dom, _ = report
    assert "<img" not in dom
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom


def test_backward_view_renders(report, chromium):
    tmp, page, _, _ = report
    result = run_chromium(chromium, tmp, "--dump-dom", page.as_uri() + "#mode=backward")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert console_messages(result.stderr) == []
    chart = re.search(r'<div class="chart" id="chart"[^>]*>', dom).group(0)
    assert 'data-mode="backward"' in chart
    assert int(re.search(r'data-nodes="(\d+)"', chart).group(1)) >= 10
    # the region without backward time is not drawn in the backward view
    assert 'data-path="linear_sum_assignment"' not in dom
    assert 'data-path="linear_sum_assignment"' in report[2]


def test_screenshot(report, chromium):
    tmp, page, _, _ = report
    shot = tmp / "report.png"
    result = run_chromium(
        chromium,
        tmp,
        f"--screenshot={shot}",
        "--window-size=1280,1800",
        "--hide-scrollbars",
        page.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}", file=sys.stderr)
