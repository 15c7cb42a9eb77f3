# A device tensor rebuilt every step from Python numbers read one by one from tensors:
# `[int(m.sum()) for m in M]` is one host sync per record, then a copy back to the device.
import torch


def train(model, loader, opt, device):
    for t, X, M in loader:
        X, M = X.to(device), M.to(device)
        n_obs = torch.tensor([int(m.sum()) for m in M], device=device)  # expect: TD203
        loss = (model(t, X) * M).sum(-1).div(n_obs.clamp(min=1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        counts = M.sum(dim=(1, 2)).clamp(min=1)  # near-miss: counted on the device
        sizes = torch.tensor([len(r) for r in t], device=device)  # near-miss: Python lengths
        scale = torch.tensor([float(w) for w in (0.5, 2.0)], device=device)  # near-miss: literals
        lengths = torch.tensor([int(n) for n in (X != 0).sum(1)], device=device)  # expect: TD203
        held = torch.randperm(8)
        views = torch.tensor([int(k) for k in held[:2]], device=device)  # near-miss: a host tensor's elements
        inked = torch.tensor([int((X[i] < 0.5).sum() > 0) for i in range(X.shape[0])], device=device)  # expect: TD203
        long_rows = torch.tensor([int(len(r) > 3) for r in t], device=device)  # near-miss: Python lengths compared
        print(counts.shape, sizes.shape, scale.shape, lengths.shape, views.shape, inked.shape, long_rows.shape)
