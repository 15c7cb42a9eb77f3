"""TD511 in a lambda the module binds to a name, called every step (nerf-pytorch's mse2psnr,
linted in corpus 31's round)."""
import torch

mse2psnr = lambda x: -10.0 * torch.log(x) / torch.log(torch.Tensor([10.0]))  # expect: TD511
img2mse = lambda x, y: torch.mean((x - y) ** 2)  # near-miss: no constant tensor
LOG10 = (lambda: torch.log(torch.tensor(10.0)))()  # near-miss: run once, at import
halve = lambda x: x / torch.tensor([2.0])  # near-miss: no loop calls it


def train(model, loader, opt, history):
    for x, y in loader:
        loss = img2mse(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(mse2psnr(loss.detach()))
    return halve(torch.stack(history))
