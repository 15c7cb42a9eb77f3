"""Work done in processes the script starts is named in the report, not silently missing."""

import multiprocessing

import torch

import torchdoctor
from torchdoctor.collect.children import ChildProcesses, target_name


def _train():  # (a child's work: nothing to do here)
    pass


def test_processes_started_while_profiling_are_named_in_the_notes():
    net = torch.nn.Linear(2, 2)
    context = multiprocessing.get_context("fork")
    with torchdoctor.Profiler(net, syncs=False, hot_lines=False) as prof:
        net(torch.ones(1, 2))
        workers = [context.Process(target=_train) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    notes = " ".join(prof.session["config"]["notes"])
    assert "2 process(es) started by the script (_train x2) ran outside this profile" in notes
    assert multiprocessing.process.BaseProcess.start.__module__ == "multiprocessing.process"


def test_dataloader_workers_and_spawn_wrappers_are_told_apart():
    from torch.utils.data._utils.worker import _worker_loop

    assert target_name(multiprocessing.Process(target=_worker_loop)) is None
    from torch.multiprocessing.spawn import _wrap

    wrapped = multiprocessing.Process(target=_wrap, args=(_train, 0, (), None))
    assert target_name(wrapped) == "_train"
    assert ChildProcesses().note() is None


class _Probe(torch.utils.data.Dataset):
    """Each item says what the worker process inherited from the profiled parent."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        from torchdoctor.collect.state import STATE

        modes = torch._C._len_torch_function_stack()
        return torch.tensor([modes, STATE.profiler is not None, torch.ones(2).sum().item()])


def test_forked_dataloader_workers_run_without_the_profilers_modes_and_hooks():
    """A fork inherits the parent's function modes (hot lines, sync audit) and hooks: minGPT's
    4 workers ran every __getitem__ through them, slowing its steps 1.6x, for a profile nobody
    reads. In the child the profiler steps aside; the parent's collection goes on."""
    net = torch.nn.Linear(3, 1)
    loader = torch.utils.data.DataLoader(
        _Probe(), batch_size=2, num_workers=2, multiprocessing_context="fork"
    )
    rows, parent_modes = [], []
    with torchdoctor.Profiler(net, hot_lines=True, window=50) as prof:
        for _ in range(2):
            for batch in loader:  # workers forked inside a detailed step: modes are pushed
                rows += batch.tolist()
                parent_modes.append(torch._C._len_torch_function_stack())
                net(batch).sum().backward()
                prof.step()
    assert min(parent_modes) >= 1  # the parent's collection goes on ...
    assert len(prof.session["steps"]) == 4 and prof.session["tree"]["children"]
    assert len(rows) == 8 and all(modes == 0 and not profiled for modes, profiled, _ in rows)


def test_a_forked_child_that_ends_its_profile_writes_nothing():
    """os.fork() in a profiled script: the child's profile is empty, the parent's intact."""
    import os

    net = torch.nn.Linear(2, 2)
    with torchdoctor.Profiler(net, syncs=False) as prof:
        net(torch.ones(1, 2)).sum().backward()
        prof.step()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: leaves the with block, reports, exits
            try:
                prof.stop()
                os.write(write, f"{prof.forked} {len(prof.session['steps'])}".encode())
            finally:
                os._exit(0)
        os.close(write)
        said = os.read(read, 100).decode()
        os.waitpid(pid, 0)
        net(torch.ones(1, 2)).sum().backward()
        prof.step()
    assert said == "True 0"
    assert not prof.forked and len(prof.session["steps"]) == 2


def test_python_scripts_started_in_new_interpreters_are_named_in_the_notes(tmp_path):
    """odd2: `torchdoctor run -- torchrun ... train.py` profiled the launcher, whose ranks
    (`python -u train.py`, started with subprocess) ran unprofiled while the report said "No
    rule found a problem worth fixing" and nothing of them; a command that is no user script
    (`python -c`, a library's own script) is not counted."""
    import subprocess
    import sys

    script = tmp_path / "rank_job.py"
    script.write_text("pass\n")
    net = torch.nn.Linear(2, 2)
    with torchdoctor.Profiler(net, syncs=False, hot_lines=False) as prof:
        net(torch.ones(1, 2))
        for _ in range(2):
            subprocess.run([sys.executable, "-u", str(script)], check=True)
        subprocess.run([sys.executable, "-c", "pass"], check=True)  # (near miss)
    notes = " ".join(prof.session["config"]["notes"])
    assert "2 Python process(es) started by the script (rank_job.py x2) ran outside" in notes
    assert "-m torchdoctor run train.py" in notes
    assert subprocess.Popen.__init__.__module__ == "subprocess"  # (the wrapper is gone)
