# A loop or step function that steps an optimizer the file builds from torch.optim trains,
# whatever the optimizer is called (self.sgd.step(), adam.step()); an L-BFGS step handed its
# closure (the backward runs inside it) is an optimizer step too. A scheduler's .step() is not.
import torch


def fit_lbfgs(model, x, y, rounds):
    lbfgs = torch.optim.LBFGS(model.parameters(), max_iter=20, line_search_fn="strong_wolfe")
    prev = float("inf")
    for _ in range(rounds):
        def closure():
            lbfgs.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        cur = lbfgs.step(closure).item()  # expect: TD201 (a training loop: not TD206's solver)
        if abs(prev - cur) < 1e-9:
            break
        prev = cur
    return model


class Fitter:
    def __init__(self, model):
        self.model = model
        self.sgd = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_step(self, x, y):
        loss = ((self.model(x) - y) ** 2).mean()
        self.sgd.zero_grad()
        loss.backward()
        self.sgd.step()
        return loss.item()  # expect: TD201


def fit_adam(model, x, y):
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = ((model(x) - y) ** 2).mean()
    adam.zero_grad()
    loss.backward()
    adam.step()
    return float(loss)  # expect: TD201


def probe_gradients(model, x, y):
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD(model.parameters()))
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    plateau.step(loss)
    return loss.item()  # near-miss: a scheduler's step, no optimizer step (a gradient probe)
