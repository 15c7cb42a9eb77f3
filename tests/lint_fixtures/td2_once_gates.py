"""TD201 under a test of the loop's counter for equality: one step, not every step (corpus 31)."""
import torch


def fit(model, loader, opt, epochs, debug=False):
    for epoch in range(epochs):
        for step, (x, y) in enumerate(loader):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if epoch == 0 and step == 0:
                print("initial loss", loss.item())  # near-miss: the first step only
            if step == len(loader) - 1:
                print("last batch", loss.item())  # near-miss: the epoch's last step only
            if epoch == 0:
                print("warm-up", loss.item())  # expect: TD201
            if step == 0 or debug:
                print(loss.item())  # expect: TD201


def fit_steps(model, batches, opt):
    it = 0
    while True:
        x, y = next(batches)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        it += 1
        if it == 1:
            print(f"first step: {loss.item():.3f}")  # near-miss: the first step only
        if x.shape[0] == 0:
            print(loss.item())  # expect: TD201
