# A list of int() / float() casts of tensors assigned to a name, then made a device tensor at
# every step (n_fg = [int(t["labels"].gt(0).sum()) for t in targets]; torch.tensor(n_fg,
# device=device)), is rebuilt from tensor data like the list written in place; a list of
# Python numbers (sizes from the config) is not.
import torch


def train(model, loader, opt, sizes):
    device = torch.device("cuda")
    for imgs, targets in loader:
        loss = model(imgs.to(device, non_blocking=True), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n_fg = [int(t["labels"].gt(0).sum()) for t in targets]  # expect: TD201
        fg = torch.tensor(n_fg, device=device)  # expect: TD203
        hw = [int(s * 1.5) for s in sizes]
        scale = torch.tensor(hw, device=device)  # near-miss: Python numbers of the config
        model.update_stats(fg, scale)
