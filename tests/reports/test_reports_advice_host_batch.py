"""Rule host-batch: a script's function that assembles each batch on the host, one sample at a
time, over several lines none of which is hot alone (nanoGPT's get_batch)."""

from __future__ import annotations

from reports_sessions_crafted import host_batch_session

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.host_batch import host_batch


def test_the_lines_of_a_batch_built_on_the_host_are_added_up_with_their_sampled_python():
    """nanoGPT: get_batch's two torch.stack lines were 2-3% of the step each, their NumPy
    slicing sampled apart; nothing named the function that took ~9% of the step."""
    session = host_batch_session()
    (item,) = host_batch(session)
    assert item.title.startswith("get_batch() (train.py:124) assembles each batch on the host")
    low, high = item.saving_range_ms
    assert high == low * 2 + 4.0 and low > 0  # timed, halved; timed + the sampled 4 ms
    assert "4 ms of Python outside torch in the function (sampled)" in item.evidence[0]
    assert "data[rows]" in item.code and "DataLoader" in item.fix
    assert item.locations == ["/x/train.py:124", "/x/train.py:125"]
    assert any(a.rule == "host-batch" for a in advise(session))


def test_no_host_batch_advice_for_model_code_a_hot_line_or_other_ops():
    session = host_batch_session()
    lines = session["hot_lines"]["lines"]
    for line in lines:
        line["owner"] = "encoder"  # inside a module: the tree's and the hot lines' business
    assert host_batch(session) == []
    session = host_batch_session()
    session["hot_lines"]["lines"][0]["total_ms"] = {"mean": 0.2 * session["step_ms"]["median"]}
    assert host_batch(session) == []  # a hot line alone: its own advice
    session = host_batch_session()
    for line in session["hot_lines"]["lines"]:
        line["top_ops"] = [{"op": "torch.matmul", "forward_ms": 2.0, "calls_per_step": 4.0}]
    assert host_batch(session) == []  # compute, no host data


def test_python_sampled_on_the_functions_lines_without_a_torch_call_counts_too():
    """nanoGPT re-creates its np.memmap at every get_batch call: ~1 ms sampled on that line,
    which makes no torch call (no hot line)."""
    session = host_batch_session()
    session["python_lines"].append({"file": "/x/train.py", "line": 120, "function": "get_batch",
                                    "location": "train.py:120", "ms_per_step": 2.0,
                                    "code": "data = np.memmap(path, dtype=np.uint16)"})  # fmt: skip
    (item,) = host_batch(session)
    assert "/x/train.py:120" in item.locations
    assert any(e.startswith("train.py:120 `data = np.memmap") and "(no torch call)" in e
               for e in item.evidence)  # fmt: skip
    assert "6 ms of Python outside torch in the function" in item.evidence[0]


def test_a_function_stacking_tensors_it_did_not_read_from_the_host_is_no_host_batch():
    """An inference script's post-processing (torch.cat of the model's outputs) builds tensors
    too, from tensors already made: no host data, no advice."""
    session = host_batch_session()
    session["python_lines"] = []
    for line in session["hot_lines"]["lines"]:
        line["top_ops"] = [{"op": "torch.cat", "forward_ms": 2.0, "calls_per_step": 4.0}]
    assert host_batch(session) == []


def test_pinned_copies_are_told_on_a_gpu_run_only():
    """nanoGPT on a CPU was told to pin the batch and copy it with non_blocking=True."""
    fixes = {}
    for device in ("cpu", "cuda:0"):
        session = host_batch_session()
        session.setdefault("environment", {})["device"] = device
        (item,) = host_batch(session)
        fixes[device] = item.fix
    assert "pin" not in fixes["cpu"] and "GPU" not in fixes["cpu"]
    assert "non_blocking=True" in fixes["cuda:0"] and fixes["cuda:0"].startswith(fixes["cpu"])


def test_tensors_made_of_python_lists_of_samples_get_the_arrays_fix_and_one_figure():
    """minimalRL's DQN: sample() returns torch.tensor(s_lst, dtype=torch.float) of 32 NumPy
    arrays and four more lists (no Python sampled apart): it read '0.459 ms-0.459 ms per step
    (6-6%)' and a language model's fix (np.arange(block_size))."""
    session = host_batch_session()
    session["python_lines"] = []
    for line in session["hot_lines"]["lines"]:  # (as long as the two lines and their Python)
        line.update(total_ms={"mean": 5.0}, forward_ms={"mean": 5.0},
                    top_ops=[{"op": "torch.tensor", "forward_ms": 4.0, "calls_per_step": 2.0}])
    (item,) = host_batch(session)
    assert "block_size" not in item.fix and "np.asarray(s_lst, np.float32)" in item.code
    assert "preallocated NumPy arrays" in item.fix
    low = item.title.split(": ", 1)[1].split(" per step")[0]
    assert "-" not in low and "-" not in item.title.rsplit("(", 1)[1]
    session = host_batch_session()  # (a stack of slices: the gather's fix, near miss)
    (item,) = host_batch(session)
    assert "block_size" in item.fix and "data[rows]" in item.code
