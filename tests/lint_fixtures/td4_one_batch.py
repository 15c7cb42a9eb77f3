"""TD402/TD403 and a loader that gives one batch (ermongroup/ncsn's test functions: a batch of
reference images for inpainting, taken with next(iter(dataloader))): pinning one batch and
keeping its workers alive save nothing. A loader walked every epoch still wants both."""
import torch
from torch.utils.data import DataLoader


def references(ds, model, name):
    if name == "CELEBA":
        dataloader = DataLoader(ds, batch_size=20, shuffle=True, num_workers=4)  # near-miss: one batch
        refer_image, _ = next(iter(dataloader))
    else:
        dataloader = DataLoader(ds, batch_size=20, shuffle=True, num_workers=4)  # near-miss: one batch, a named iterator
        data_iter = iter(dataloader)
        refer_image, _ = next(data_iter)
    return model(refer_image.cuda())


def train(ds, model, opt, epochs):
    loader = DataLoader(ds, batch_size=20, shuffle=True, num_workers=4)  # expect: TD402, TD403
    for _ in range(epochs):
        for x, _ in loader:
            model(x.cuda()).sum().backward()
            opt.step()
    export = DataLoader(ds, batch_size=20, num_workers=4)  # expect: TD402
    return [model(x.cuda()) for x, _ in export]
