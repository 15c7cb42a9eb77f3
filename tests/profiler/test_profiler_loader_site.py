"""Each DataLoader the run iterates is recorded with where the user's code fetches from it
(``site``: the function's first line and the fetching line), so a lint finding on the
``DataLoader(...)`` call in that function is judged by that loader's settings."""

import torch

from torchdoctor.collect.profiler import Profiler


def _evaluate(net):
    loader = torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=4)
    with torch.no_grad():
        for x in loader:  # FETCH_EVAL
            net(x)


def test_loaders_fetched_from_two_functions_are_two_entries_with_their_sites():
    net = torch.nn.Linear(4, 1)
    train = torch.utils.data.DataLoader(torch.randn(40, 4), batch_size=4)
    with Profiler(net, syncs=False, hot_lines=False) as prof:
        for k, x in enumerate(train):  # FETCH_TRAIN
            net(x).sum().backward()
            if k == 3:
                _evaluate(net)
            prof.step()
    loaders = prof.session["environment"]["data_loaders"]
    sites = {d["site"]["line"]: d for d in loaders}
    source = open(__file__).read().splitlines()
    lines = {n for n, text in enumerate(source, 1) if text.endswith(("# FETCH_EVAL", "# FETCH_TRAIN"))}
    assert set(sites) == lines  # one entry per fetching line, same settings or not
    first = _evaluate.__code__.co_firstlineno
    (evaluation,) = [d for d in loaders if d["site"]["function_line"] == first]
    assert evaluation["site"]["file"] == __file__ and evaluation["steps"] == 1


def test_a_loader_a_framework_s_loop_iterates_names_that_framework():
    """The Hugging Face Trainer builds and iterates its own DataLoader: the session says so
    (``driver``), and the data-loading advice then names TrainingArguments' knobs."""
    import types

    trainer = types.ModuleType("transformers.trainer")  # (a stand-in: the loop's module name)
    exec("def inner_loop(loader, step):\n    for x in loader:\n        step(x)\n", trainer.__dict__)
    net = torch.nn.Linear(4, 1)
    loader = torch.utils.data.DataLoader(torch.randn(40, 4), batch_size=4)
    with Profiler(net, syncs=False, hot_lines=False, step_boundary="auto") as prof:
        trainer.inner_loop(loader, lambda x: net(x).sum().backward())
    (entry,) = prof.session["environment"]["data_loaders"]
    assert entry["driver"] == "transformers"
