"""The other phase's lines (between optimizer.step() and the next forward), sampled: work that
makes no torch call (a garbage collection, a checkpoint's pickling) gets its line and advice."""

import gc
import signal
import time

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.advice import advise

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGPROF"), reason="POSIX only")


def _train(between, steps=8):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torchdoctor.Profiler(model, detail="always", syncs=False) as prof:
        for _ in range(steps):
            model(torch.randn(32, 64)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            between()
            prof.step()
    return prof.session.to_dict()


def _busy(seconds=0.03):
    end = time.thread_time() + seconds
    while time.thread_time() < end:  # (CPU work no torch call shows)
        sum(range(1000))


def test_work_between_steps_is_sampled_to_its_line_and_advised():
    session = _train(_busy)
    top = session["other_lines"][0]
    assert top["function"] == "_busy" and top["ms_per_step"] > 15.0  # of ~30 ms of CPU
    assert signal.getsignal(signal.SIGPROF) is signal.SIG_DFL  # the handler is gone again
    titles = [a.title for a in advise(session) if a.rule == "between-steps"]
    assert titles and "between optimizer.step() and the next forward" in titles[0]


def test_a_wait_is_charged_to_no_line():
    """CPU time is charged: a sleep (no CPU) before a short computation does not make that
    computation look slow."""
    session = _train(lambda: (time.sleep(0.03), sum(range(100))))
    assert sum(row["ms_per_step"] for row in session.get("other_lines") or ()) < 10.0


def test_a_script_that_samples_with_sigprof_itself_keeps_its_handler():
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGPROF, mine)
    try:
        session = _train(gc.collect, steps=3)
        assert signal.getsignal(signal.SIGPROF) is mine
        assert "other_lines" not in session
    finally:
        signal.signal(signal.SIGPROF, previous)


def _run_script(tmp_path, name, text):
    """``torchdoctor run`` of a script with no step boundary: its output and its session."""
    import json
    import subprocess
    import sys

    script = tmp_path / name
    script.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "torchdoctor", "run", "--out", "o", "--no-history", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    session = json.loads((tmp_path / "o" / "session.json").read_text())
    assert session["config"]["step_boundary"] == "whole_run", done.stderr
    return done, session


def test_a_run_without_steps_has_no_between_steps_lines(tmp_path):
    """A script that fails while importing (before any step) is one whole-run step: its
    imports are no "work between steps"."""
    done, session = _run_script(tmp_path, "fails_early.py", (
        "import time, json\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3:\n"
        "    json.dumps(list(range(1000)))\n"
        "raise SystemExit('no data')\n"
    ))  # fmt: skip
    assert "other_lines" not in session and "Between steps" not in done.stdout


def test_a_one_shot_script_shows_its_lines_outside_the_model_without_per_step_advice(tmp_path):
    """pytorch/examples super_resolve.py: import, load, one model call, save the output. The
    whole run is one step; its lines outside the model are shown as such, and neither "do it
    every N steps" nor torch.compile (one call cannot pay for compiling) is advised."""
    done, session = _run_script(tmp_path, "one_shot.py", (
        "import time, json, torch\n"
        "def load():\n"
        "    t = time.process_time()\n"
        "    while time.process_time() - t < 0.4:\n"
        "        json.dumps(list(range(1000)))\n"
        "    return torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU())\n"
        "def save(out):\n"
        "    t = time.process_time()\n"
        "    while time.process_time() - t < 0.4:\n"
        "        json.dumps(out)\n"
        "model = load()\n"
        "with torch.no_grad():\n"
        "    out = model(torch.randn(4096, 256))\n"
        "save(out[0, :8].tolist())\n"
    ))  # fmt: skip
    # (the no_grad block's end ends the forward phase: loading and saving are both outside)
    outside = {row["location"]: row["ms_per_step"] for row in session["other_lines"]}
    assert outside["one_shot.py:5"] > 200 and outside["one_shot.py:10"] > 200
    # the step's own (self) row points at them, not at a line of a few torch calls
    (own,) = [c for c in session["tree"]["children"] if c["kind"] == "self"]
    assert {p["location"] for p in own["hot_lines"][:2]} == {"one_shot.py:5", "one_shot.py:10"}
    assert "Outside the model\n" in done.stdout and "Between steps" not in done.stdout
    rules = {a["rule"] for a in session["advice"]}
    assert not rules & {"between-steps", "python-outside-torch"}
    assert not [a for a in session["advice"] if a.get("cause") == "torch.compile"]


def _rollout(steps=8, matmuls=0):
    """A policy loop: forward, pure-Python work (an environment's step) while the graph is open,
    then backward; ``matmuls`` big torch calls made by a user line outside any module."""
    torch.manual_seed(0)
    policy = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    opt = torch.optim.SGD(policy.parameters(), lr=0.01)
    big = torch.randn(400, 400)
    with torchdoctor.Profiler(policy, detail="always", syncs=False) as prof:
        for _ in range(steps):
            out = policy(torch.randn(32, 64))
            _busy(0.02)  # the environment: Python, no torch call
            for _ in range(matmuls):
                big = (big @ big).tanh()  # torch's time: the hot lines', not Python's
            out.pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    return prof.session.to_dict()


def test_python_outside_torch_in_the_forward_phase_is_sampled_to_its_line_and_advised():
    from torchdoctor.reports import render_report

    session = _rollout(matmuls=6)
    rows: dict[str, float] = {}  # ms per step by function (its lines together)
    for row in session["python_lines"]:
        rows[row["function"]] = rows.get(row["function"], 0.0) + row["ms_per_step"]
    assert rows["_busy"] > 10.0  # of ~20 ms of CPU
    # the matmul line's time is torch's (its ticks fall in the hot lines' handler): not Python
    assert rows.get("_rollout", 0.0) < 0.25 * rows["_busy"], rows
    assert "other_lines" not in session or all(
        row["function"] != "_busy" for row in session["other_lines"]
    )  # (forward phase: not "between steps")
    advice = [a for a in advise(session) if a.rule == "python-outside-torch"]
    assert advice and "Python work the step waits for" in advice[0].title
    assert advice[0].saving_range_ms[1] == pytest.approx(session["python_lines"][0]["ms_per_step"])
    assert "## Python outside torch" in render_report(session, "md")


def test_python_inside_a_module_is_the_module_s_not_python_outside_torch():
    class Env(nn.Module):  # Python inside a module's forward: the tree's time for it
        def forward(self, x):
            _busy(0.02)
            return x

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), Env())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torchdoctor.Profiler(model, detail="always", syncs=False) as prof:
        for _ in range(6):
            model(torch.randn(4, 8)).sum().backward()
            opt.step()
            prof.step()
    # none of Env's 20 ms per step is charged to a line: a stray tick that the interpreter
    # handles just after the forward returns (one interval, 2 ms of CPU, in a loaded process)
    # is all a line may get
    lines = prof.session.to_dict().get("python_lines") or []
    assert sum(row["ms_per_step"] for row in lines) < 2.0, lines


def _env_rollout(model, calls=40, each=0.0003):
    """An RL rollout: a policy call (forward phase), then the environment's own step (CPU work
    in the other phase), again and again: the phase switches every fraction of a millisecond."""
    with torch.no_grad():
        for _ in range(calls):
            model(torch.randn(1, 64))
            _busy(each)


def test_work_between_many_short_model_calls_is_still_sampled():
    """stable-baselines3's DQN: its rollouts switch between a policy call and an environment
    step every few hundred microseconds, shorter than the sampler's interval; the timer ran
    only inside one phase segment and almost never fired (3 ticks in a run): it now runs on
    through the step, and a tick takes the other phase's segments since the last one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torchdoctor.Profiler(model, detail="always", syncs=False) as prof:
        for _ in range(12):
            model(torch.randn(32, 64)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            _env_rollout(model)  # (about 12 ms of the environment's CPU work a step)
            prof.step()
    lines = prof.session.to_dict().get("other_lines") or []
    busy = sum(r["ms_per_step"] for r in lines if r["function"] in ("_busy", "_env_rollout"))
    assert busy > 4.0, lines  # (of ~12 ms; before: next to nothing)


def test_a_tick_in_the_tail_of_optimizer_step_is_no_lines():
    """The optimizer's step wrapper runs on after its post hooks (the other phase has begun):
    a tick there is the optimizer's, and slow_train.py's `optimizer.step()` line was told
    "takes 10% of the step between optimizer.step() and the next forward"."""
    import sys

    from torchdoctor.collect.other_sampler import OtherPhaseSampler

    sampler = OtherPhaseSampler()
    sampler.sampling, sampler.phase, sampler.pending = True, "other", 3_000_000
    wrapper = compile("def wrapper(charge):\n    charge(sys._getframe())\n",
                      "/venv/lib/python3.11/site-packages/torch/optim/optimizer.py", "exec")
    space = {"sys": sys}
    exec(wrapper, space)
    space["wrapper"](sampler._charge)  # (a tick inside the wrapper, called from this line)
    assert sampler.lines == {} and sampler.pending == 3_000_000  # (kept for the next tick)
    sampler._charge(sys._getframe())  # a tick on this test's own line takes the pending time
    assert sum(sampler.lines.values()) >= 3_000_000


def test_work_under_a_step_modulo_gate_is_told_it_runs_on_some_steps_only():
    """A checkpoint written under `if i % 10 == 0` fell in a detailed step and read "a
    checkpoint written every step" with a saving: the source's gate says it is periodic."""
    calls = [0]

    def between():
        calls[0] += 1
        if calls[0] % 2 == 1:  # (the gate the advice names)
            sum(range(3_000_000))  # (the gated work)

    session = _train(between, steps=15)
    (row,) = [r for r in session["other_lines"] if "the gated work" in r["code"]]
    assert row["gate"] == "calls[0] % 2 == 1"
    (item,) = [a for a in advise(session) if a.rule == "between-steps"]
    assert "under `if calls[0] % 2 == 1`" in item.title and "every step" not in item.title
    assert item.estimated_saving_ms is None and item.confidence == "low"
    assert "gate" not in _train(_busy, steps=3)["other_lines"][0]


def test_an_automatic_garbage_collection_is_charged_to_no_line(monkeypatch):
    """nlp-tutorial's Seq2Seq: full collections of 50-95 ms, set off by whatever line
    allocated, read as 0.86 ms a step (7%) on `hidden = torch.zeros(...)`, a 2 us line; a
    gc.collect() the loop calls is its line's work (near miss)."""
    import sys

    from torchdoctor.collect import other_sampler
    from torchdoctor.collect.other_sampler import OtherPhaseSampler

    now = [0]
    monkeypatch.setattr(other_sampler.time, "thread_time_ns", lambda: now[0])
    for asked, charged in ((False, 2_000_000), (True, 52_000_000)):
        sampler = OtherPhaseSampler()
        sampler.ticking = sampler.sampling = True
        sampler.phase, sampler.last, now[0] = "other", 0, 1_000_000
        if asked:
            sampler._collection("start", {"generation": 2})  # as gc.collect() calls it
        else:
            sampler._collection("start", {"generation": 2})
        now[0] = 51_000_000
        sampler._collection("stop", {"generation": 2})
        now[0] = 52_000_000
        sampler._charge(sys._getframe())
        assert sum(sampler.lines.values()) == charged, asked


def test_a_tick_in_the_sync_audits_mode_is_no_lines():
    """The sync audit's mode handles each torch call a user line makes between steps (its
    frames are transparent to the hot lines, which look through them for the user's line): a
    tick there is the profiler's. A TD3 soft update (`target_param.data.copy_(tau * ...)`, 0.34
    ms unprofiled) read 1.78 ms a step, 8.6% of it, in "Between steps"."""
    import sys

    from torchdoctor.collect.lines_frames import COLLECT
    from torchdoctor.collect.other_sampler import OtherPhaseSampler

    sampler = OtherPhaseSampler()
    sampler.sampling, sampler.phase = True, "other"
    handler = compile("def handler(charge):\n    charge(sys._getframe())\n",
                      COLLECT + "syncs_modes.py", "exec")  # fmt: skip
    space = {"sys": sys}
    exec(handler, space)
    space["handler"](sampler._charge)  # (a tick inside the audit's handler, called from here)
    assert sampler.lines == {}
    sampler._charge(sys._getframe())  # (near miss: a tick on this test's own line is its)
    assert len(sampler.lines) == 1


def test_a_tick_takes_at_most_two_intervals_of_segments_no_tick_saw():
    """minimalRL's DQN: an episode's environment steps between policy calls (81.6 ms of short
    `other` segments no tick fell in) went whole to the next ticked line, the next update's
    `random.sample(self.buffer, n)`, and `loss.backward()` read 11% of the step between steps."""
    import sys

    from torchdoctor.collect.other_sampler import MAX_PENDING_NS, OtherPhaseSampler

    sampler = OtherPhaseSampler()
    sampler.sampling, sampler.phase = True, "other"
    sampler.pending, sampler.last = 81_600_000, time.thread_time_ns()
    sampler._charge(sys._getframe())
    assert MAX_PENDING_NS <= sum(sampler.lines.values()) < MAX_PENDING_NS + 5_000_000
    assert sampler.pending == 0
