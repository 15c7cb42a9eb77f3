"""Acceptance: examples/slow_train.py and the part_contrastive slow workload without regions get
first-ranked advice naming their hot line, with the cure and a saving."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

import torchdoctor
from torchdoctor.analyze.advice import advice_dicts

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ROOT / "src" / "torchdoctor" / "workloads"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_slow_train_first_advice_names_line_34_with_the_cure(tmp_path, monkeypatch, capsys):
    from torchdoctor.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["run", "--out", str(tmp_path / "out"), str(ROOT / "examples" / "slow_train.py")])
    assert code == 0
    session = torchdoctor.Session.load(tmp_path / "out" / "session.json")
    first = session["advice"][0]
    titles = [a["title"] for a in session["advice"][:3]]
    assert first["rule"] == "hot-line", titles
    assert first["title"].startswith("slow_train.py:34 "), titles
    assert "torch.linalg.solve" in first["title"] and "whiten" in first["title"]
    assert first["estimated_saving_ms"] > 0
    assert any("ms forward" in e and "per step" in e for e in first["evidence"])
    assert any(e.startswith("lint TD102") for e in first["evidence"])
    # the TD102 finding is evidence of the line's advice, not an advice of its own
    assert not any(a["rule"] == "lint" and "TD102" in a["title"] for a in session["advice"])
    assert all(a["rule"] != "unattributed" for a in session["advice"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Hot lines" in report and "slow_train.py:34" in report


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def part_contrastive_copy(tmp_path):
    """The slow part_contrastive workload copied out of the package (user code), its regions
    removed: no module around the losses, nothing named."""
    losses_path = tmp_path / "pc_losses.py"
    losses_path.write_text((WORKLOADS / "part_contrastive_losses.py").read_text())
    source = (WORKLOADS / "part_contrastive.py").read_text()
    source = source.replace(
        "from torchdoctor.workloads import part_contrastive_losses as losses",
        "import pc_losses as losses",
    )
    workload_path = tmp_path / "pc_workload.py"
    workload_path.write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        _load("pc_losses", losses_path)
        module = _load("pc_workload", workload_path)
        module.region = lambda name: contextlib.nullcontext()  # regions removed
        yield module, losses_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pc_losses", None)
        sys.modules.pop("pc_workload", None)


def test_part_contrastive_without_regions_names_the_mahalanobis_line_and_prescribes_whitening(
    part_contrastive_copy,
):
    module, losses_path = part_contrastive_copy
    workload = module.PartContrastive(scale="tiny")
    session = torchdoctor.profile(workload.slow_step, steps=2, warmup=1, syncs=False)
    session["advice"] = advice_dicts(session)
    assert not any(n.get("kind") == "region" for n in session["tree"]["children"])
    text = losses_path.read_text().splitlines()
    solve_line = 1 + next(
        i for i, t in enumerate(text) if re.search(r"return torch\.sqrt\(diff @ torch\.linalg", t)
    )
    first = session["advice"][0]
    assert first["rule"] == "hot-line", [a["title"] for a in session["advice"][:3]]
    assert first["locations"][0].endswith(f":{solve_line}")
    assert first["title"].startswith(f"pc_losses.py:{solve_line} ")
    assert "pac_slow" in first["title"]  # the loop calling it
    assert "whiten" in first["fix"] and "torchdoctor.ops" in first["fix"]
    assert first["estimated_saving_ms"] > 0


PER_IMAGE_CHOLESKY = '''
import torch
torch.manual_seed(0)
model = torch.nn.Linear(32, 32)
opt = torch.optim.SGD(model.parameters(), lr=1e-3)

def whitened_norm(feats):
    total = 0.0
    for b in range(feats.shape[0]):
        cov = feats[b].T @ feats[b] / feats.shape[1] + 0.1 * torch.eye(feats.shape[2])
        L = torch.linalg.cholesky(cov)
        z = torch.linalg.solve_triangular(L, feats[b].T, upper=False)
        total = total + z.pow(2).mean()
    return total / feats.shape[0]

for step in range(12):
    loss = whitened_norm(model(torch.randn(32, 16, 32)))
    opt.zero_grad()
    loss.backward()
    opt.step()
'''


def test_a_cholesky_per_image_gets_the_batched_call_as_its_cure(tmp_path, monkeypatch):
    from torchdoctor.cli import main

    script = tmp_path / "per_image.py"
    script.write_text(PER_IMAGE_CHOLESKY)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--out", str(tmp_path / "out"), str(script)]) == 0
    session = torchdoctor.Session.load(tmp_path / "out" / "session.json")
    line = 1 + PER_IMAGE_CHOLESKY.splitlines().index("        L = torch.linalg.cholesky(cov)")
    advice = [a for a in session["advice"] if a["rule"] == "hot-line"]
    # the line's advice, alone or merged with the other lines of its loop (one cause)
    ours = next(
        a for a in advice if any(loc.endswith(f"per_image.py:{line}") for loc in a["locations"])
    )
    assert any(e.startswith("lint TD103") for e in ours["evidence"])
    assert "(B, n, n)" in ours["fix"]
    assert ours["estimated_saving_ms"] > 0
