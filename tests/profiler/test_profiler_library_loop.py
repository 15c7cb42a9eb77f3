"""A training loop that lives in an installed library (``trainer.train()``): the work between
steps is charged to the library's loop lines, and the advice names them instead of telling the
user to move ``trainer.train()`` out of a loop."""

import signal
import sys
import textwrap

import pytest

import torchdoctor
from torchdoctor.analyze.advice import advise
from torchdoctor.collect.other_chains import loop_lines

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGPROF"), reason="POSIX only")

LIBRARY = textwrap.dedent(
    """
    import time
    import torch

    def _bookkeeping(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            sum(range(1000))

    def train(model, steps):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(steps):
            model(torch.randn(32, 64)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            _bookkeeping(0.02)  # LOOP LINE
    """
)


@pytest.fixture()
def fake_trainer(tmp_path):
    folder = tmp_path / "site-packages" / "faketrainer"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(LIBRARY)
    sys.path.insert(0, str(folder.parent))
    try:
        import faketrainer

        yield faketrainer
    finally:
        sys.path.remove(str(folder.parent))
        sys.modules.pop("faketrainer", None)


def test_the_librarys_loop_lines_are_named_and_advised(fake_trainer):
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    torch.manual_seed(0)
    with torchdoctor.Profiler(
        model, detail="always", syncs=False, step_boundary="auto"
    ) as prof:  # (as `torchdoctor run` does)
        fake_trainer.train(model, 8)  # the user's one line
    session = prof.session.to_dict()
    row = session["other_lines"][0]
    assert row["code"].startswith("fake_trainer.train(model, 8)")
    assert row.get("encloses_loop") is True
    loop_line = 1 + LIBRARY.splitlines().index("        _bookkeeping(0.02)  # LOOP LINE")
    inside = row["inside"][0]
    assert inside["function"] == "train" and inside["line"] == loop_line
    assert inside["via"]["function"] == "_bookkeeping"
    assert inside["ms_per_step"] > 10.0  # of ~20 ms of CPU per step
    rules = {a.rule: a for a in advise(session)}
    assert "between-steps" not in rules  # not "move fake_trainer.train() out of the loop"
    advice = rules["library-loop"]
    assert "the faketrainer training loop" in advice.title
    assert f"__init__.py:{loop_line}" in advice.title
    assert any("_bookkeeping" in e for e in advice.evidence)


def test_the_loop_lines_are_found_below_the_frames_that_enclose_every_tick():
    train = ("/s/site-packages/lib/t.py", 1, "train")
    loop = ("/s/site-packages/lib/t.py", 2, "loop")
    log = ("/s/site-packages/lib/t.py", 3, "loop")
    save = ("/s/site-packages/lib/t.py", 4, "loop")
    inner = ("/s/site-packages/lib/io.py", 9, "write")
    rows = loop_lines({(train, loop, log): 70, (train, loop, save, inner): 30})
    assert [(r["line"], r["share"]) for r in rows] == [(3, 0.7), (4, 0.3)]
    assert rows[0]["via"] is None and rows[1]["via"]["function"] == "write"
    # one path holds every tick: its last frame in the package of the outermost frame
    other = ("/s/site-packages/otherlib/x.py", 5, "helper")
    (row,) = loop_lines({(train, loop, log, other): 10})
    assert (row["line"], row["via"]["function"]) == (3, "helper")
    # the ticks share no frame: nothing to split
    assert loop_lines({(train,): 5, (log,): 5}) == []
    # the heaviest chain ends in the enclosing frame itself (a time_sequence_prediction run
    # raised IndexError here): the loop's lines come from the chains that go below it
    rows = loop_lines({(train,): 60, (train, log): 25, (train, save): 15})
    assert [(r["line"], r["share"]) for r in rows] == [(3, 0.25), (4, 0.15)]


def test_a_library_helper_called_from_the_users_own_loop_stays_the_users_line(fake_trainer):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torchdoctor.Profiler(model, detail="always", syncs=False, step_boundary="auto") as prof:
        for _ in range(8):
            model(torch.randn(32, 64)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            fake_trainer._bookkeeping(0.02)  # the user's line, in the user's loop
    row = prof.session.to_dict()["other_lines"][0]
    assert row["code"] == "fake_trainer._bookkeeping(0.02)  # the user's line, in the user's loop"
    assert not row.get("encloses_loop")
    rules = {a.rule for a in advise(prof.session.to_dict())}
    assert "between-steps" in rules and "library-loop" not in rules


def test_a_frame_without_a_line_number_is_named_by_its_file():
    """f_lineno is None while some instructions run (Python 3.11): such a tick must not break
    the session (it once raised in linecache.getline)."""
    from torchdoctor.collect.other_sampler import other_lines_section

    train = ("/s/site-packages/lib/t.py", 0, "train")
    step = {"other_lines": {("/w/run.py", 0, "<module>", (train, ("/s/io.py", 0, "f"))): 10**6}}
    (row,) = other_lines_section([step], "other_lines", {("/s/site-packages/lib/t.py", "train")})
    assert row["code"] == "" and row["inside"][0]["location"] == "t.py"
