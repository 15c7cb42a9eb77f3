"""Scalar reads many times a step come from a Python loop (pytorch/examples reinforce: the
policy's action read with .item() for the environment at every environment step, 210 a step):
they get the loop's remedy (batch it, or accumulate on the device), not 'defer to display'."""

from torchdoctor.analyze.advice.syncs import LOOP_READS, host_syncs


def _record(per_step, line=60, phase="forward"):
    return {"kind": "item", "op": "return action.item()", "file": "/a/reinforce.py",
            "line": line, "count": int(per_step * 30), "per_step": per_step, "phase": phase,
            "stall_ms": None, "steps": 30}  # fmt: skip


def _advice(*records):
    (item,) = host_syncs({"syncs": list(records), "step_ms": {"median": 100.0}})
    return item


def test_reads_per_item_of_a_loop_get_the_batching_remedy():
    item = _advice(_record(210.0))
    assert item.title == "210 host reads per step from a Python loop: each would wait for the device on a GPU"
    assert "batch the loop" in item.fix and "gymnasium.vector" in item.fix
    assert "return action.item()    # reinforce.py:60" in item.code
    assert "y.tolist()" in item.fix and "faster on the CPU" not in item.fix  # (a CPU run)
    (cuda,) = host_syncs({"syncs": [_record(210.0)], "step_ms": {"median": 100.0},
                          "environment": {"device": "cuda:0"}})  # fmt: skip
    assert cuda.title.endswith("each waits for the device") and "faster on the CPU" in cuda.fix


def test_a_read_or_two_per_step_stays_a_per_step_scalar():
    item = _advice(_record(1.0, line=88, phase="other"), _record(1.0, line=90, phase="other"))
    assert item.title.startswith("Keep per-step scalars on the device")
    # ... and the loop remedy starts where the reads of all lines add up to LOOP_READS
    many = [_record(LOOP_READS / 4, line=n) for n in range(4)]
    assert "Python loop" in _advice(*many).title


def test_actions_for_an_environment_get_the_loop_remedy_however_few_a_step():
    """cleanrl's DQN: `actions = torch.argmax(q_values, dim=1).cpu().numpy()`, 7.3 reads per
    optimizer step (one per environment step, epsilon-greedy skipping some): an action the
    environment needs, not a metric to keep on the device."""
    action = {**_record(7.28, line=170), "kind": "cpu",
              "op": "actions = torch.argmax(q_values, dim=1).cpu().numpy()"}  # fmt: skip
    item = _advice(action)
    assert "Python loop" in item.title and "gymnasium.vector" in item.fix
    assert "LazyMetrics" not in item.title


def test_a_branch_on_a_tensor_each_step_is_told_to_test_less_often_not_to_keep_a_metric():
    """Whisper's decoding loop: `if completed or tokens.shape[-1] > self.n_ctx: break`, the
    stop test read every token; LazyMetrics cannot replace it."""
    record = {**_record(1.0, line=705, phase="other"), "kind": "bool",
              "op": "if completed or tokens.shape[-1] > self.n_ctx:"}  # fmt: skip
    item = _advice(record)
    assert item.title.startswith("Branches on tensor values every step")
    assert "every k steps" in item.fix and "LazyMetrics" not in item.fix


def test_a_value_read_per_parameter_is_told_to_compute_them_as_one_tensor():
    """A Lightning callback logging `[p.detach().norm().item() for p in pl_module.parameters()]`
    (12 reads a step) was told about itos and gymnasium environments."""
    record = {**_record(12.0), "op": "norms = [p.detach().norm().item() for p in pl_module.parameters()]"}
    item = _advice(record)
    assert "Python loop" in item.title
    assert "torch._foreach_norm" in item.fix and "gymnasium" not in item.fix
    assert "_foreach_norm" in item.code
