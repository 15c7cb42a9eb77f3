import json

from torchdoctor.benchmarks import workloads as bench
from torchdoctor.cli import main


def test_demo_list_names_the_five_workloads(capsys):
    assert main(["demo", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == [
        "part_contrastive",
        "diffusion_policy",
        "mixture_vae",
        "token_pruning",
        "crossmodal_reid",
    ]


def test_demo_unknown_workload_is_a_usage_error(capsys):
    assert main(["demo", "nope"]) == 2
    assert "torchdoctor demo --list" in capsys.readouterr().err


def test_demo_profiles_times_verifies_and_writes(tmp_path, capsys):
    args = ["demo", "token_pruning", "--scale", "tiny", "--steps", "1", "--repeats", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "token_pruning: equivalent" in out
    assert "slow vs fast" in out
    session = json.loads((tmp_path / "token_pruning-slow.json").read_text())
    assert session["schema_version"] == 1 and session["tree"]
    assert any(r["kind"] in ("nonzero", "tolist", "item") for r in session["syncs"])
    summary = json.loads((tmp_path / "token_pruning-demo.json").read_text())
    assert summary["equivalence"]["equivalent"] is True
    assert summary["comparisons"][0]["speedup"] > 0


def test_benchmark_rows_for_one_workload_quick():
    rows, notes = bench._workload_rows("token_pruning", quick=True)
    assert [r[1] for r in rows] == ["slow vs fast", "fast vs its kernel-construction floor"]
    slow_row = rows[0]
    assert slow_row[5] >= 2 and slow_row[6] <= 1  # syncs: one per frame vs at most one
    assert slow_row[7] == "yes"
    assert notes and notes[0].startswith("token_pruning")


def test_the_demo_fits_the_tree_to_the_console_not_cutting_headers(monkeypatch, tmp_path, capsys):
    """The demo printed the tree with no width, so rich cut its last header at 100 columns
    ("cal…" in the README); it drops columns to fit, as `torchdoctor run`'s report does."""
    monkeypatch.setenv("COLUMNS", "100")
    args = ["demo", "part_contrastive", "--scale", "tiny", "--steps", "1", "--repeats", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if line.startswith("module / region"))
    assert "…" not in header and len(header.rstrip()) <= 100, header
