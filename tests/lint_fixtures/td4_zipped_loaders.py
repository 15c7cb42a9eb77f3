# DARTS walks two loaders in step: a pinned one for the weights, an unpinned one for the
# architecture. Only the pinned loader's batches are its own; the unpinned one's copies are
# blocking by necessity (nothing to overlap), so they are not TD404.
from torch.utils.data import DataLoader


def search(model, data, valid, device, opt):
    train_q = DataLoader(data, batch_size=64, num_workers=4, pin_memory=True, persistent_workers=True)
    valid_q = DataLoader(valid, batch_size=64, num_workers=4, persistent_workers=True)  # expect: TD402
    for _step, ((x, y), (xv, yv)) in enumerate(zip(train_q, valid_q)):
        x = x.to(device)  # expect: TD404
        y = y.to(device, non_blocking=True)
        xv, yv = xv.to(device), yv.to(device)  # near-miss: the unpinned loader's batch
        model(xv).sum().backward()
        model(x, y).sum().backward()
        opt.step()
    for batch in train_q:
        batch.to(device)  # expect: TD404
