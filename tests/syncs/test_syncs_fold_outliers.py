"""A long run's sync audit folds its per-step events (bounded memory) but keeps the long steps
apart: an evaluation's reads every 20 steps stay "in outlier steps", as without folding."""

import time

import torch

import torchdoctor
from torchdoctor.collect import syncs, syncs_fold


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _run(steps=120):
    x = torch.ones(64, 64)
    with torchdoctor.Profiler(syncs=True, warmup=2, detail="always") as prof:
        for i in range(steps):
            float((x @ x).sum().item())  # train
            _spin(0.003)  # (a step of milliseconds: a pause of the host's, a garbage
            # collection in a long test session, makes no step of microseconds "long")
            if i % 20 == 10:
                _spin(0.03)  # an evaluation, far longer than a step
                for _ in range(6):
                    float(x.mean().item())  # evaluation
            prof.step()
    records = [r for r in prof.session["syncs"] if r["kind"] != "cuda_sync_warning"]
    evaluation = next(r for r in records if "x.mean()" in r["op"])
    train = next(r for r in records if "(x @ x)" in r["op"])
    return prof._audit, evaluation, train


def test_folded_events_keep_the_long_steps_apart(monkeypatch):
    _, whole_eval, whole_train = _run()
    assert whole_eval.get("in_outlier_steps"), whole_eval  # (the steps were long enough)
    monkeypatch.setattr(syncs, "FOLD_AT", 16)
    monkeypatch.setattr(syncs_fold, "FOLD_AT", 16)
    audit, folded_eval, folded_train = _run()
    assert len(audit._events) < 64  # folded: not a key per step and line
    assert folded_eval["in_outlier_steps"] == whole_eval["in_outlier_steps"]
    assert folded_eval["count"] == whole_eval["count"]
    assert folded_train["count"] == whole_train["count"]
