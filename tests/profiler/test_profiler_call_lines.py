"""session["call_lines"]: each outermost model call's forward time charged to the user lines it
ran under (GCN's ``loss_train, acc_train = test(model, ...)``: the model runs inside test())."""

import os
import time

import pytest
import torch
from torch import nn

import torchdoctor
from tests.hotlines.hotlines_helpers import marked_line


def evaluate(model, x):
    with torch.no_grad():
        return model(x).sum()  # inner


def test_model_calls_are_charged_to_the_user_lines_they_run_under():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(512, 64)

    def step():
        model(x).square().mean().backward()  # train
        opt.step()
        opt.zero_grad()
        return evaluate(model, x)  # evaluation

    s = torchdoctor.profile(step, model=model, steps=4, warmup=1, syncs=False)
    here = os.path.basename(__file__)
    rows = {(os.path.basename(r["file"]), r["line"]): r for r in s["call_lines"]}
    train = rows[(here, marked_line(step, "train"))]
    evaluation = rows[(here, marked_line(step, "evaluation"))]
    inner = rows[(here, marked_line(evaluate, "inner"))]
    assert train["modules"] == evaluation["modules"] == ["Sequential"]
    assert evaluation["function"] == "step" and inner["function"] == "evaluate"
    assert evaluation["ms_per_step"] == inner["ms_per_step"] > 0  # one call, under both lines
    forward = s["tree"]["children"][0]["forward_ms"]["mean"]  # both calls' forward
    assert abs(train["ms_per_step"] + evaluation["ms_per_step"] - forward) < 0.05 * forward
    assert not any("/bin/" in r["file"] for r in s["call_lines"])  # no entry script rows


def _spin(seconds):
    """CPU work of ``seconds`` (an environment's step, a batch read from the page cache): a
    sleep would be time blocked, which the long steps' advice tells apart from work."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _train_with_periodic_work(model, opt, x, work, steps, due, **options):
    """A profiled training loop that runs ``work()`` at every step ``i % 20 == due``; the
    session, whose detailed long steps were kept apart."""
    with torchdoctor.Profiler(model, syncs=False, **options) as prof:
        for i in range(steps):
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
            if i % 20 == due:
                work()
            prof.step()
    session = prof.session
    assert session["config"]["detail"].get("outlier_steps"), "the periodic steps were not long"
    return session


def test_the_model_calls_of_long_steps_are_kept_apart():
    """An evaluation every 20 steps makes those steps long: the tree leaves them out, and
    session["long_step_calls"] names the line their extra model calls ran under. (Rare enough
    that a few steps slowed by another process keep the long ones under 15% of the run: a
    fresh clone's CI saw 3 of 29 plus noise, all kept as the loop's shape.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(256, 64)

    def validate():
        for _ in range(40):
            evaluate(model, x)  # validation

    s = _train_with_periodic_work(model, opt, x, validate, steps=60, due=19, detail="always")
    here = os.path.basename(__file__)
    rows = {r["location"]: r for r in s["long_step_calls"]}
    row = rows[f"{here}:{marked_line(validate, 'validation')}"]
    assert row["function"] == "validate" and row["extra_ms"] > 0.5 * row["ms_per_step"] > 0
    # 40 calls in each long step that validates, averaged over the long steps: steps another
    # process slowed can join them without any (fresh clones' CI: 30 and 15 per long step)
    assert 0 < row["calls_per_step"] <= 40, row
    assert row["one_sample_share"] == 0.0 and row["samples_per_call"] == 256  # (batches of 256)
    assert f"{here}:{marked_line(validate, 'validation')}" not in {
        r["location"] for r in s.get("call_lines") or ()
    }  # (typical steps never validate)


@pytest.mark.parametrize("envs, each", [(1, "one sample"), (4, "4 samples")])
def test_a_rollout_of_small_batch_calls_every_n_steps_is_counted_and_advised(envs, each):
    """stable-baselines3's PPO: every n_steps environment steps, collect_rollouts calls the
    policy once per observation (batch 1), between optimizer steps on minibatches of 64;
    cleanrl's ppo.py: once per step of its 4 vector environments (batch 4)."""
    from torchdoctor.analyze.advice import advice_dicts

    torch.manual_seed(0)
    policy = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 2))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    batch = torch.randn(64, 4)

    def collect_rollout():
        obs = torch.randn(envs, 4)
        for _ in range(120):
            with torch.no_grad():
                logits = policy(obs)  # rollout
            obs = obs * 0.9 + logits.sum() * 0.01
            _spin(2e-4)  # (the environment's step: long steps stay long on a fast host)

    # (windows: the schedule aims a detailed step at the long ones)
    s = _train_with_periodic_work(policy, opt, batch, collect_rollout, steps=100, due=10)
    here = os.path.basename(__file__)
    rows = {r["location"]: r for r in s["long_step_calls"]}
    row = rows[f"{here}:{marked_line(collect_rollout, 'rollout')}"]
    assert row["calls_per_step"] == 120 and row["samples_per_call"] == envs
    assert row["one_sample_share"] == (1.0 if envs == 1 else 0.0)
    assert row["typical_calls"] == 0.0
    s["advice"] = advice_dicts(s)
    (periodic,) = [a for a in s["advice"] if a["rule"] == "periodic-steps"]
    assert f": 120 model calls on {each} each (a rollout collecting experience: " \
        "collect_rollout (" in periodic["title"]  # (the function's name says what it does)
    assert "n_envs" in periodic["fix"] and "a quarter of the calls" in periodic["fix"]
    assert any("(Sequential)" in e and "120 times" in e for e in periodic["evidence"])
    assert row["eval_share"] == 0.0 and "evaluation" not in periodic["title"]


def test_a_periodic_evaluation_in_small_batches_is_told_as_an_evaluation():
    """nanoGPT's estimate_loss(): model.eval(), then eval_iters calls on batch_size samples
    each, model.train(). Batching its calls is the cure, but it is no rollout: no word of
    environments."""
    from torchdoctor.analyze.advice import advice_dicts

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def estimate_loss():
        model.eval()
        with torch.no_grad():
            for _ in range(120):
                model(torch.randn(4, 4))  # evaluation
                _spin(2e-4)  # (reading a batch: long steps stay long on a fast host)
        model.train()

    s = _train_with_periodic_work(model, opt, torch.randn(64, 4), estimate_loss, 100, 10)
    here = os.path.basename(__file__)
    rows = {r["location"]: r for r in s["long_step_calls"]}
    assert rows[f"{here}:{marked_line(estimate_loss, 'evaluation')}"]["eval_share"] == 1.0
    s["advice"] = advice_dicts(s)
    (periodic,) = [a for a in s["advice"] if a["rule"] == "periodic-steps"]
    assert periodic["title"].endswith("model calls on 4 samples each (an evaluation: the model "
                                      "in eval mode)"), periodic["title"]
    assert "n_envs" not in periodic["fix"] and "environments" not in periodic["fix"]
    assert "fewer, larger batches" in periodic["fix"]
    assert any("100% of them with the model in eval mode" in e for e in periodic["evidence"])


def test_a_periodic_evaluation_on_large_batches_is_not_told_to_batch_its_calls():
    """An evaluation of 40 batches of 4096 every 20 steps: many calls, but batched already."""
    from torchdoctor.analyze.advice import advice_dicts

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    held_out = torch.randn(4096, 4)

    def evaluate_all():
        with torch.no_grad():
            for _ in range(40):
                model(held_out)

    s = _train_with_periodic_work(model, opt, torch.randn(64, 4), evaluate_all, 100, 10)
    s["advice"] = advice_dicts(s)
    (periodic,) = [a for a in s["advice"] if a["rule"] == "periodic-steps"]
    assert "model calls on" not in periodic["title"] and "n_envs" not in periodic["fix"]
