"""TD204 through a list of host tensors that torch.cat / torch.stack joins before the move
(corpus 31: a two-tower model's click labels)."""
import torch


def train(model, loader, opt, device):
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        labels = torch.cat([torch.ones(len(x)), torch.zeros(len(x))]).to(device)  # expect: TD204
        grid = torch.stack((torch.arange(4), torch.arange(4))).cuda()  # expect: TD204
        both = torch.cat([x, x.flip(0)])  # near-miss: device tensors joined on the device
        flags = torch.cat([torch.ones(len(x), device=device), y.to(device)])  # near-miss
        logits = model(both, grid).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels * flags)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.cat([torch.ones(2), torch.zeros(2)]).to(device)  # near-miss: once, after the loop
