"""TD403 and a DataLoader built as a for loop's iterable: one pass, its workers start once
whatever persistent_workers says; inside an epoch loop it is built anew each epoch."""
from torch.utils.data import DataLoader
from tqdm import tqdm


def test(model, ds):
    # near miss: one pass over a loader built where it is walked
    scores = []
    for x, y in DataLoader(ds, batch_size=16, num_workers=2):
        scores.append(model(x) == y)
    return scores


def export(model, ds):
    # near miss: the same through enumerate(tqdm(...))
    for i, x in enumerate(tqdm(DataLoader(ds, batch_size=16, num_workers=4))):
        model(x)


def features(model, ds):
    # near miss: a comprehension's one pass
    return [model(x) for x in DataLoader(ds, batch_size=64, num_workers=2)]


def train(model, ds, opt, epochs):
    for epoch in range(epochs):
        for x, y in DataLoader(ds, batch_size=16, num_workers=2, shuffle=True):  # expect: TD403
            opt.zero_grad()
            model(x, y).backward()
            opt.step()


def fit(model, ds, opt, epochs):
    loader = DataLoader(ds, batch_size=16, num_workers=2, shuffle=True)  # expect: TD403
    for epoch in range(epochs):
        for x, y in loader:
            model(x, y).backward()
            opt.step()
