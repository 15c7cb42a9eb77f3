"""TD403's two messages: a loader built once without persistent workers, and one built anew in
every pass of a loop (glow-pytorch's sample_data generator builds a new DataLoader each time
the last one is spent: persistent_workers on it would change nothing)."""

from __future__ import annotations

from torchdoctor.lint import lint_source

GLOW = '''
from torch.utils.data import DataLoader

def sample_data(dataset, batch_size):
    loader = iter(DataLoader(dataset, shuffle=True, batch_size=batch_size, num_workers=4))
    while True:
        try:
            yield next(loader)
        except StopIteration:
            loader = iter(DataLoader(dataset, shuffle=True, batch_size=batch_size, num_workers=4))
            yield next(loader)

def shards(paths, batch_size):
    for path in paths:
        yield DataLoader(path, batch_size=batch_size, num_workers=4, persistent_workers=True)
'''


def test_a_generator_rebuilding_its_loader_when_spent_is_told_to_build_it_once() -> None:
    found = {f.line: f.message for f in lint_source(GLOW, select=["TD403"])}
    assert sorted(found) == [5, 10]  # (line 15: a loader per shard, its data changes)
    assert "built anew in every iteration of this loop" in found[10]
    assert "built anew" not in found[5] and "persistent_workers" in found[5]
