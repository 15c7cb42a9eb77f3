"""TD602 and a train-and-validate function that never calls .eval(): a loop over a held-out
loader (val, val_loader, test_dl) after the epoch's steps, with no backward and no no_grad,
records a graph in every model call (blind corpus 36's TCN forecaster)."""
import torch


def train(model, train_loader, val, opt, epochs):
    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        total = 0.0
        for x, y in val:  # expect: TD602
            total += torch.nn.functional.mse_loss(model(x), y).item()
        print(epoch, total)


def fit(net, loader, val_loader, opt, epochs):
    for epoch in range(epochs):
        for x, y in loader:
            net(x).sum().backward()
            opt.step()
        # near miss: validation under no_grad
        with torch.no_grad():
            for x, y in val_loader:
                net(x)


def fit_augmented(net, loader, extra, opt, epochs):
    for epoch in range(epochs):
        for x, y in loader:
            net(x).sum().backward()
            opt.step()
        # near miss: a second loader not named as held-out data (a second training pass?)
        for x, y in extra:
            net(x)


def fit_with_hooks(net, loader, val_dl, opt, epochs, log):
    for epoch in range(epochs):
        for x, y in loader:
            net(x).sum().backward()
            opt.step()
        # near miss: the held-out loop runs no module (only logs its sizes)
        for x, y in val_dl:
            log(len(x))


class Solver:  # Demucs' solver: the epoch loop's steps run in a method of the class
    def train(self):
        for epoch in range(self.epochs):
            self.model.train()
            self._run_one_epoch(epoch)
            self.model.eval()  # near miss: validation below runs under no_grad
            with torch.no_grad():
                valid = self._run_one_epoch(epoch, train=False)
            state = self.model.state_dict()
            self.history.append((valid, state))

    def _run_one_epoch(self, epoch, train=True):
        total = 0.0
        for x, y in (self.train_loader if train else self.valid_loader):
            loss = torch.nn.functional.l1_loss(self.model(x), y)
            if train:
                loss.backward()
                self.optimizer.step()
            total += loss.detach()
        return total

    def evaluate(self):
        self.model.eval()
        for x, y in self.test_loader:  # expect: TD602
            self.model(x)
