"""The host-syncs advice tells each kind of read its own fix: DETR's step on a GPU reads 44
metrics in its MetricLogger, checks 24 asserts on box tensors and copies the matching cost to the
host for scipy: one title counting them, one sentence per family naming its lines."""

from __future__ import annotations

from torchdoctor.analyze.advice.sync_families import family
from torchdoctor.analyze.advice.syncs import host_syncs


def _rec(op, kind, file, line, function, per_step):
    return {"kind": kind, "op": op, "file": file, "line": line, "function": function,
            "count": 5 * per_step, "per_step": per_step, "phase": "forward", "stall_ms": None,
            "steps": 5}  # fmt: skip


DETR = [
    _rec("v = v.item()", "item", "/detr/util/misc.py", 167, "update", 44.0),
    _rec("assert (boxes1[:, 2:] >= boxes1[:, :2]).all()", "bool", "/detr/util/box_ops.py", 51,
         "generalized_box_iou", 12.0),  # fmt: skip
    _rec("C = C.view(bs, num_queries, -1).cpu()", "cpu", "/detr/models/matcher.py", 78,
         "forward", 6.0),  # fmt: skip
    _rec("loss_value = losses_reduced_scaled.item()", "item", "/detr/engine.py", 45,
         "train_one_epoch", 1.0),  # fmt: skip
]


def test_reads_of_different_kinds_get_a_fix_each():
    (item,) = host_syncs({"syncs": DETR, "step_ms": {"median": 50.0}})
    assert item.title == (
        "63 host reads per step (44 metric reads, 12 asserts, 6 host copies, 1 other): each "
        "waits for the device"
    )
    assert "Metrics read every step (misc.py:167)" in item.fix
    assert "Asserts on tensor values (box_ops.py:51)" in item.fix and "python -O" in item.fix
    assert "(matcher.py:78)" in item.fix and "torchdoctor.ops.linear_assignment" in item.fix
    assert "Other reads (engine.py:45)" in item.fix
    assert "gymnasium" not in item.fix  # (the per-item loop's remedy is not theirs)
    assert "LazyMetrics" in item.code  # (the largest family's example)


def test_a_few_asserts_are_not_told_to_become_lazy_metrics():
    asserts = [DETR[1]]
    (item,) = host_syncs({"syncs": asserts, "step_ms": {"median": 50.0}})
    assert "asserts" in item.title and not item.title.startswith("Keep per-step scalars")
    assert "_assert_async" in item.code


def test_metrics_and_per_item_reads_alone_keep_their_own_advice():
    metric = [dict(DETR[3])]
    (item,) = host_syncs({"syncs": metric, "step_ms": {"median": 50.0}})
    assert item.title.startswith("Keep per-step scalars on the device")
    actions = [_rec("action = probs.multinomial(1).item()", "item", "/rl/reinforce.py", 40,
                    "select_action", 210.0)]  # fmt: skip
    (loop,) = host_syncs({"syncs": actions, "step_ms": {"median": 50.0}})
    assert loop.title == "210 host reads per step from a Python loop: each would wait for the device on a GPU"


def test_families_read_from_the_line():
    assert family({"op": "losses.update(loss.item(), n)", "kind": "item", "function": "train"}) == "metric"
    assert family({"op": "writer.add_scalar('l', l.item())", "kind": "item"}) == "metric"
    assert family({"op": "x = t.cpu()", "kind": "cpu", "file": "/a/model.py"}) == "loop"
    assert family({"op": "cost = cost.cpu().numpy()", "kind": "cpu", "file": "/a/b.py",
                   "function": "hungarian_match"}) == "host-op"  # fmt: skip


def test_a_rollout_s_actions_and_an_update_s_metric_each_get_their_fix():
    """cleanrl's PPO: the rollout hands each action to the environment (a read the host needs,
    in a periodic step), the update keeps a clip fraction per minibatch in a list; neither is
    cured by LazyMetrics alone."""
    ppo = [
        {**_rec("next_obs, reward, term, trunc, infos = envs.step(action.cpu().numpy())", "cpu",
                "/rl/ppo.py", 220, "<module>", 2.49), "in_outlier_steps": 1},  # fmt: skip
        _rec("clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]",
             "item", "/rl/ppo.py", 273, "<module>", 1.0),  # fmt: skip
    ]
    assert [family(r) for r in ppo] == ["action", "metric"]
    (item,) = host_syncs({"syncs": ppo, "step_ms": {"median": 1.7}})
    assert "1 metric reads" in item.title and "2.49 actions for an environment" in item.title
    ppo[0]["per_step"] = 3.77546  # (three figures in the title, not six)
    (item,) = host_syncs({"syncs": ppo, "step_ms": {"median": 1.7}})
    assert "(3.78 actions for an environment, 1 metric reads)" in item.title
    assert "Actions handed to an environment (ppo.py:220)" in item.fix
    assert "gymnasium.vector" in item.fix and "Metrics read every step (ppo.py:273)" in item.fix
    # actions alone: the per-item loop's advice, as before
    (alone,) = host_syncs({"syncs": ppo[:1], "step_ms": {"median": 1.7}})
    assert "from a Python loop" in alone.title


def test_an_action_whose_source_hands_it_to_env_step_is_no_metric(tmp_path):
    """odd2's y_rl_dqn: `a = ... else q(torch.from_numpy(s)).argmax().item()` (the op text cut
    to its width hides the read) then `env.step(a)`: told "Accumulate metrics as device tensors
    (LazyMetrics)"; the collector reads the loop and marks the read an action."""
    from torchdoctor.collect.source_lines import hands_to_step

    script = tmp_path / "dqn.py"
    script.write_text(
        "for ep in range(30):\n"
        "    while not done:\n"
        "        a = random.randrange(2) if random.random() < eps else q(torch.from_numpy(s)).argmax().item()\n"  # noqa: E501
        "        s, r, done, trunc, _ = env.step(a)\n"
        "        loss = huber(q(s), y); loss.backward(); opt.step()\n"
        "        total = loss.item()\n"
    )  # fmt: skip
    assert hands_to_step(str(script), 3) and not hands_to_step(str(script), 6)  # (near miss)
    op = "a = random.randrange(2) if random.random() < eps else q(torch.from_numpy(s))...."
    record = _rec(op, "item", str(script), 3, "<module>", 0.9)
    (metric,) = host_syncs({"syncs": [record], "step_ms": {"median": 5.0}})
    assert "LazyMetrics" in metric.fix.split(";")[0]  # (the op text alone: a per-step scalar)
    (action,) = host_syncs({"syncs": [{**record, "action": True}], "step_ms": {"median": 5.0}})
    assert "gymnasium.vector" in action.fix and not action.title.startswith("Keep per-step")
