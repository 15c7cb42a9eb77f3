"""Syncs of periodic work that loops over the model count per model call over the run:
minimalRL's DQN plays an episode between every 10 updates, one `.item()` per policy call, and
its episodes grew from 10 to 190+ calls as the agent learned. Short episodes were no long steps
(their reads not counted), and the audited ones, early, counted at the audited ones' mean:
2.13 reads a step stated, ~5.2 true; now 7.96 against 8.15 counted by the script itself."""

from torchdoctor.collect.long_steps import outliers


def _dqn(audited_at=(9, 19, 29)):
    """Updates of 2 model calls (3.7 ms light); an episode before every 10th, its calls growing
    with the step (3 per environment step: the layers called outermost)."""
    steps = []
    for k in range(400):
        episode = 3 * (10 + k // 2) if k % 10 == 9 else 0
        audited = k < 3 or k in audited_at
        steps.append({"index": k, "detailed": audited, "audited": audited,
                      "wall_ms": 3.7 + 0.05 * episode * (2.0 if audited else 1.0),
                      "model_calls": 2 + episode})  # fmt: skip
    return steps


def test_short_episodes_count_and_calls_weigh_the_rate():
    steps = _dqn()
    found = outliers(steps, [s for s in steps if s["detailed"]])
    assert found["audited_long_steps"] == [9, 19, 29]
    episodes = [s for s in steps if s["index"] % 10 == 9]
    seen = [s for s in episodes if s["audited"]]
    # the rate at which the audited episodes' syncs come: the run's episode calls over theirs
    calls = sum(s["model_calls"] for s in episodes) / sum(s["model_calls"] for s in seen)
    assert abs(found["outlier_rate"] - 3 * calls / 400) < 1e-9
    assert found["outlier_rate"] > 2 * len(episodes) / 400  # (not 1 in 10: later ones are longer)


def test_steps_of_one_kind_keep_the_plain_rate():
    """Near miss: evaluations of equal length every 50 steps: one long step each, whatever the
    weights (a checkpoint's calls are a typical step's: no loop, by time alone)."""
    steps = [{"index": k, "detailed": k < 5 or k == 49, "audited": k < 5 or k == 49,
              "wall_ms": 300.0 if k % 50 == 49 else 3.0,
              "model_calls": 101 if k % 50 == 49 else 1} for k in range(400)]  # fmt: skip
    found = outliers(steps, [s for s in steps if s["detailed"]])
    assert found["outlier_rate"] == 8 / 400
