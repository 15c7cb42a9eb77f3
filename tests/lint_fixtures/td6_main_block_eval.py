"""TD602 in a function a script's `if __name__ == "__main__":` block hands a model it put in
eval mode (vq-vae-2-pytorch's extract_code.py, linted in corpus 31's round)."""
import torch


def extract(loader, model):
    out = []
    for x in loader:  # expect: TD602
        out.append(model.encode(x).detach().cpu())
    return out


def accumulate(loader, net):
    total = 0.0
    for x in loader:  # near-miss: `net` is never put in eval mode
        total = total + net(x).sum()
    return total


if __name__ == "__main__":
    model = torch.load("vqvae.pt")
    model.eval()
    net = torch.load("net.pt")
    print(extract([torch.zeros(1, 3)], model))
    print(accumulate([torch.zeros(1, 3)], net))
    net.eval()
