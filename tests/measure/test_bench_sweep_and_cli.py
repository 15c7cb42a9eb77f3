"""sweep() slopes, tables, and the `torchdoctor bench` command."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.cli import main
from torchdoctor.measure import BenchTable, sweep
from torchdoctor.measure.sweep import loglog_slope


def test_loglog_slope_recovers_power_laws():
    sizes = [10, 100, 1000]
    assert loglog_slope(sizes, [s**2 for s in sizes]) == pytest.approx(2.0)
    assert loglog_slope(sizes, [3 * s for s in sizes]) == pytest.approx(1.0)
    assert loglog_slope([10], [1.0]) is None


def test_sweep_fake_clock_slopes():
    now = [0]

    def clock():
        return now[0]

    def linear(n):
        now[0] += n * 1000

    def quadratic(n):
        now[0] += n * n * 10

    result = sweep(
        {"linear": linear, "quadratic": quadratic},
        [10, 100, 1000],
        lambda n: n,
        clock=clock,
        repeats=3,
    )
    assert result.slope("linear") == pytest.approx(1.0)
    assert result.slope("quadratic") == pytest.approx(2.0)
    table = result.to_table("growth")
    assert table.columns == ["callable", "10", "100", "1000", "log-log slope"]
    assert "| linear |" in table.to_markdown()


def test_sweep_keeps_errors_per_callable():
    def picky(x):
        if x.numel() > 10:
            raise ValueError("too big")
        return x

    result = sweep({"picky": picky, "sum": torch.sum}, [5, 50], lambda n: torch.ones(n), repeats=2)
    assert result.medians_ms["picky"][1] is None
    assert result.medians_ms["sum"][1] is not None
    assert "too big" in result.errors["picky"]


def test_table_rejects_wrong_row_length():
    table = BenchTable("t", ["a", "b"])
    with pytest.raises(ValueError, match="2 columns"):
        table.add_row(1)


def test_cli_version_and_bench(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "torchdoctor" in capsys.readouterr().out
    out = tmp_path / "bench.md"
    assert main(["bench", "harness", "--quick", "--markdown", str(out)]) == 0
    text = out.read_text()
    assert "Command: `torchdoctor bench" in text
    assert "| solve:" in text and "equivalent" in text


def test_cli_unknown_suite_is_a_usage_error(capsys):
    assert main(["bench", "no-such-suite"]) == 2
    assert "unknown suite" in capsys.readouterr().out
