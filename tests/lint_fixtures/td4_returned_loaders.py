"""TD404 through a helper that builds a pinned loader, binds it to a name and returns that name
(PyTorch-YOLOv3's ``_create_data_loader``): the caller's loop over it copies its batches."""
import torch
from torch.utils.data import DataLoader


def _create_data_loader(ds, batch_size, n_cpu):
    dataloader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=n_cpu,
                            pin_memory=True, persistent_workers=True)
    return dataloader


def run(ds, model, opt, device, epochs):
    dataloader = _create_data_loader(ds, 8, 4)
    for epoch in range(epochs):
        for batch_i, (_, imgs, targets) in enumerate(dataloader):
            imgs = imgs.to(device, non_blocking=True)  # near-miss: non_blocking
            targets = targets.to(device)  # expect: TD404
            loss = model(imgs, targets)
            loss.backward()
            opt.step()
