"""TD706 where the model was wrapped in DistributedDataParallel in another file."""


def train(ddp_model, loader, opt, accum):
    for i, (x, y) in enumerate(loader):
        loss = ddp_model(x, y) / accum
        loss.backward()  # expect: TD706
        if (i + 1) % accum == 0:
            opt.step()
            opt.zero_grad()


def train_plain(model, loader, opt, accum):
    for i, (x, y) in enumerate(loader):
        loss = model(x, y) / accum
        loss.backward()  # near-miss: nothing says this model is DDP
        if (i + 1) % accum == 0:
            opt.step()
            opt.zero_grad()
