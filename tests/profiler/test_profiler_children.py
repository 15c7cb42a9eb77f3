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
