"""Rule kernel-page-faults: a CPU step spending a large share in the kernel zero-filling
freshly mapped memory (the process's ``sys_ms`` and ``minor_faults`` per step) is told to use
a caching allocator; few faults, a small kernel share or a CUDA run say nothing."""

from __future__ import annotations

import pytest
from reports_sessions_crafted import page_faults_session

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.page_faults import kernel_page_faults
from torchdoctor.analyze.kernel_time import kernel_time
from torchdoctor.render.markdown import render_markdown
from torchdoctor.render.tree import render_tree_text


def test_half_the_step_in_the_kernel_with_many_faults_advises_a_caching_allocator():
    (item,) = kernel_page_faults(page_faults_session())
    assert item.rule == "kernel-page-faults" and item.cause == "caching-allocator"
    assert item.title.startswith("52% of the step is kernel time")  # (min(420/800, 420/790))
    assert "267,000 page faults per step" in item.title
    # the saving: half the kernel time at least, at most all of it (the measured upper bound)
    assert item.estimated_saving_ms == pytest.approx(0.525 * 800.0 / 2, rel=0.01)
    assert item.saving_range_ms[1] <= 420.0 + 1e-6
    # ... reaching nearly all of it: PointNet++ on a CPU, stated up to 1,427 ms of 1,522 ms of
    # kernel time a step (16x), measured 1,710 -> 8 ms of kernel time with glibc's mmap off
    assert item.saving_range_ms[1] >= 0.99 * 420.0
    assert any("1,094 MB" in line and "4 KiB a page" in line for line in item.evidence)
    assert "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=" in item.code
    assert "LD_PRELOAD=" in item.code and "train_gpt2.py" in item.code
    assert "peak memory" in item.fix and "os.environ inside the script does nothing" in item.fix


@pytest.mark.parametrize(
    "session",
    [
        page_faults_session(faults=400),  # the near miss: kernel time, but few faults
        page_faults_session(kernel_ms=60.0),  # 7.5% of the step in the kernel: not enough
        page_faults_session(faults=20_000),  # 48 faults per kernel ms: system calls, not pages
        page_faults_session(device="cuda:0 NVIDIA H100"),  # the device sets the pace
    ],
    ids=["few-faults", "small-share", "other-kernel-work", "cuda"],
)
def test_no_advice_without_a_large_kernel_share_made_of_page_faults(session):
    assert kernel_page_faults(session) == []


def test_several_threads_count_the_kernel_share_of_the_process_cpu_time():
    """With 4 threads the process's CPU time is 4x the wall time: 600 ms of kernel time in a
    800 ms step is 600 / 3,200 = 19% of the work, not 75%."""
    session = page_faults_session(kernel_ms=600.0)
    for step in session["steps"]:
        step["user_ms"] = 2600.0
    (item,) = kernel_page_faults(session)
    assert item.title.startswith("19% of the step")
    assert item.saving_range_ms[1] <= 0.19 * 800.0


def test_steps_without_the_figures_say_nothing():
    session = page_faults_session()
    for step in session["steps"]:
        del step["sys_ms"], step["user_ms"], step["minor_faults"]
    assert kernel_page_faults(session) == []


def test_it_ranks_first_on_the_build_nanogpt_shape_and_the_reports_show_the_kernel_time():
    session = page_faults_session()
    assert advise(session)[0].rule == "kernel-page-faults"
    caveat = "the process spent 52% of the step in the kernel"
    assert f"- **Caveat:** {caveat}" in render_markdown(session)
    assert caveat in render_tree_text(session).replace("\n", " ")
    quiet = page_faults_session(kernel_ms=40.0)  # (5% of the step: not shown)
    assert "in the kernel" not in render_markdown(quiet)


@pytest.mark.parametrize("accepted", [True, False])
def test_the_tuned_malloc_knob_replaces_the_stated_saving(accepted):
    session = page_faults_session()
    row = {"knob": "malloc_cache", "title": "glibc malloc keeps large blocks mapped",
           "status": "measured", "accepted": accepted, "drift": 0.0, "drift_limit": 0.05,
           "speedup": {"median": 1.9 if accepted else 0.99, "low": 1.8, "high": 2.0, "pairs": 2}}
    session["tune"] = {"rows": [row]}
    found = advise(session)
    (item,) = [a for a in found if a.cause == "caching-allocator"]
    if accepted:  # (the measured entry brings its saving: 800 x (1 - 1 / 1.9))
        assert item.estimated_saving_ms == pytest.approx(800.0 * (1 - 1 / 1.9), rel=0.01)
    else:
        assert item.estimated_saving_ms is None and "torchdoctor tune measured" in item.evidence[-1]


def test_a_sampled_long_run_counts_each_kept_step_for_the_steps_it_stands_for():
    """A long run keeps its first 500 steps and a uniform sample of the rest. pytorch/examples'
    word_language_model/generate.py (a Transformer fed its whole growing sequence, 1,500
    steps) faults more at every step: the plain median over the 790 kept steps told 11.2 ms of
    kernel time per step where the run's was 20.5 ms, and its caching-allocator saving at half
    what removing the faults gave. The kept sample must tell what the whole run tells."""
    def step(i):
        return {"index": i, "wall_ms": 10.0 + 0.04 * i, "sys_ms": 0.02 * i, "user_ms": 10.0,
                "minor_faults": 30 * i}  # fmt: skip
    whole = [step(i) for i in range(1500)]
    kept = whole[:500] + whole[500::4]  # (the head, and every 4th step of the rest)
    session = {"environment": {"device": "cpu"}, "label": "generate.py"}
    (full,) = kernel_page_faults({**session, "steps": whole})
    (sampled,) = kernel_page_faults({**session, "steps": kept})
    run, sample = kernel_time({"steps": whole}), kernel_time({"steps": kept})
    # (the run's median step is its 750th, not the kept list's 395th)
    assert sample.kernel_ms == pytest.approx(run.kernel_ms, rel=0.01)
    assert sample.faults == pytest.approx(run.faults, rel=0.01)
    assert sample.mean_step == pytest.approx(run.mean_step, rel=0.01)
    assert sampled.title.split(" (")[0] == full.title.split(" (")[0]
    assert sampled.estimated_saving_ms == pytest.approx(full.estimated_saving_ms, rel=0.01)
    assert sampled.saving_range_ms[1] == pytest.approx(full.saving_range_ms[1], rel=0.01)
