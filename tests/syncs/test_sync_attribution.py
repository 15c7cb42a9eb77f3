"""Where the sync audit puts things: DataLoader host reads are not device syncs, and warnings
raised under the audit name the user's line."""

from __future__ import annotations

import inspect

import pytest
import torch

from torchdoctor.collect.syncs import sync_audit


def _collate_with_host_reads(batch):
    xs = torch.stack([x for x, _ in batch])
    labels = [int(y) for _, y in batch]  # host reads of CPU tensors inside the DataLoader
    return xs, torch.tensor(sorted(set(torch.tensor(labels).tolist())))


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_data_loader_host_reads_are_not_predicted_as_device_syncs(thorough):
    """The sampler's randperm().tolist(), the seed .item() and a collate_fn's reads work on host
    tensors in a GPU run too; the loop body's loss.item() is still a sync."""
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)))
    loader = DataLoader(data, batch_size=8, shuffle=True, collate_fn=_collate_with_host_reads)
    net = torch.nn.Linear(4, 1)
    with sync_audit(thorough=thorough) as audit:
        for x, _ in loader:
            loss = net(x).pow(2).mean()
            value = loss.item()  # the one real sync per step
    lines = {(r["line"], r["kind"]) for r in audit.records()}
    item_line = inspect.currentframe().f_lineno - 2
    assert value >= 0 and lines == {(item_line, "item")}, audit.records()


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_warnings_raised_by_a_sync_name_the_user_line_not_the_audit(thorough):
    weight = torch.ones(3, requires_grad=True)
    loss = (weight * 2).sum()
    previous = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # the warning below is a warn-once in torch
    try:
        with sync_audit(thorough=thorough), pytest.warns(UserWarning, match="requires_grad") as w:
            value = float(loss)  # torch warns: converting a tensor that requires grad
        line = inspect.currentframe().f_lineno - 1
    finally:
        torch.set_warn_always(previous)
    assert value == 6.0
    assert [(record.filename, record.lineno) for record in w] == [(__file__, line)]


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_warnings_from_ordinary_ops_are_shown_at_the_user_line(thorough):
    import warnings

    shown = []

    def capture(message, category, filename, lineno, file=None, line=None):
        shown.append((filename, lineno))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = capture
        a = torch.randn(3)
        with sync_audit(thorough=thorough):
            torch.tensor(a)  # torch warns in C++: copy-construct from a tensor
        line = inspect.currentframe().f_lineno - 1
        assert warnings.showwarning is capture  # the audit's display hook is gone
    assert (__file__, line) in shown, shown


def test_a_warning_at_a_line_whose_globals_have_no_loader_is_still_shown_there():
    """`torchdoctor run` runs a script in globals without `__loader__` (as `python train.py`
    has no `__spec__`): Python 3.12's warnings ask `__spec__.loader` for the line's source
    and raised ValueError out of `float(loss)` (a test with --mlflow --wandb on 3.12.1)."""
    namespace = {"__name__": "__main__", "__spec__": None, "__loader__": None, "torch": torch,
                 "sync_audit": sync_audit}  # fmt: skip
    code = (
        "loss = (torch.ones(3, requires_grad=True) * 2).sum()\n"
        "with sync_audit():\n"
        "    value = float(loss)\n"
    )
    previous = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with pytest.warns(UserWarning, match="requires_grad") as w:
            exec(compile(code, "<script>", "exec"), namespace)
    finally:
        torch.set_warn_always(previous)
    assert namespace["value"] == 6.0
    assert [(record.filename, record.lineno) for record in w] == [("<script>", 3)]


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_a_library_warning_names_the_library_line_once_as_without_the_audit(thorough):
    """torch's own ``warnings.warn(..., stacklevel=2)`` (Dropout2d on a 2-D input) counted its
    frames through the audit's mode and named the mode: it is shown where Python names it
    without the audit (torch's dropout.py), once, as the default filter shows it."""
    import warnings

    shown = []

    def capture(message, category, filename, lineno, file=None, line=None):
        shown.append((filename, lineno))

    drop = torch.nn.Dropout2d(0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = capture
        with sync_audit(thorough=thorough):
            for _ in range(3):
                drop(torch.randn(4, 8))
        audited, shown[:] = list(shown), []
        drop(torch.randn(4, 8))  # without the audit: the same line, already shown
    assert len(audited) == 1 and audited[0][0].endswith("dropout.py"), audited
    assert shown == [], shown


@pytest.mark.parametrize("thorough", [False, True], ids=["fast", "thorough"])
def test_audited_reads_do_not_bring_a_library_warning_back_each_step(thorough):
    """Each audited host read entered warnings.catch_warnings(), which empties every module's
    once-per-line registry: Dropout2d's warning came back after every read (pytorch/examples
    mnist_rnn: 1 warning plain, 6 under `run`)."""
    import warnings

    shown = []

    def capture(message, category, filename, lineno, file=None, line=None):
        shown.append((filename, lineno))

    drop, x = torch.nn.Dropout2d(0.25), torch.randn(4, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = capture
        with sync_audit(thorough=thorough):
            for _ in range(5):
                drop(x)
                float(x.sum())  # an audited read between the warnings
    assert len(shown) == 1 and shown[0][0].endswith("dropout.py"), shown


class _Env:
    def step(self, action):
        return action


def test_a_read_the_loop_hands_to_env_step_is_recorded_as_an_action():
    """odd2's y_rl_dqn: the action read `a = ... q(obs).argmax().item()` is followed by
    `env.step(a)`; the record says so (its op text, cut to a width, may not), and the read of a
    value the loop keeps is no action."""
    import torchdoctor

    torch.manual_seed(0)
    net, env, kept = torch.nn.Linear(4, 2), _Env(), []
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=True, detail="always") as prof:
        for _ in range(6):
            a = net(torch.randn(4)).argmax().item()  # action
            env.step(a)
            loss = net(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            kept.append(loss.item())  # kept
            prof.step()
    source = inspect.getsource(test_a_read_the_loop_hands_to_env_step_is_recorded_as_an_action)
    first = test_a_read_the_loop_hands_to_env_step_is_recorded_as_an_action.__code__.co_firstlineno
    lines = {tag: first + i for i, text in enumerate(source.splitlines()) for tag in
             ("# action", "# kept") if text.endswith(tag)}  # fmt: skip
    records = {r["line"]: r for r in prof.session.to_dict()["syncs"]}
    assert records[lines["# action"]].get("action") is True
    assert "action" not in records[lines["# kept"]]
