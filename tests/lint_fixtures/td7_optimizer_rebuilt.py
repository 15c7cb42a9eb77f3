"""TD704 under a branch: a branch that also steps the optimizer rebuilds it at every update
(a DQN's warm-up gate); a branch that only rebuilds it (a learning-rate drop) is a choice."""

import torch


def dqn(q_network, target, replay, env, args):
    for global_step in range(args.total_timesteps):
        env.step(env.action_space.sample())
        if global_step > args.learning_starts and global_step % args.train_frequency == 0:
            optimizer = torch.optim.Adam(q_network.parameters(), lr=args.lr)  # expect: TD704
            loss = q_network(replay.sample(args.batch_size)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def train_with_drops(model, loader, epochs):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(epochs):
        if epoch and epoch % 30 == 0:
            lr = 0.1 * 0.1 ** (epoch // 30)
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)  # near-miss
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()


def warm_started(model, loader, warmup):
    for step, (x, y) in enumerate(loader):
        if step < warmup:
            opt = torch.optim.SGD(model.parameters(), lr=0.01 * step / warmup)  # expect: TD704
        else:
            opt = torch.optim.SGD(model.parameters(), lr=0.01)  # expect: TD704
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def style_transfer(img, model, target, steps):
    img.requires_grad_(True)
    for _ in range(steps):
        opt = torch.optim.Adam([img], lr=0.02)  # expect: TD704 (clamp_ keeps the same image)
        opt.zero_grad()
        (model(img) - target).pow(2).sum().backward()
        opt.step()
        with torch.no_grad():
            img.clamp_(0, 1)


def sac(agent, buffer, env, steps, start_steps, auto_alpha):
    obs = env.reset()
    for t in range(steps):
        obs = env.step(agent.act(obs))
        if t >= start_steps:  # every step after the warm-up, for good
            alpha_opt = torch.optim.Adam([agent.log_alpha], lr=3e-4) if auto_alpha else None  # expect: TD704
            agent.update(buffer.sample(256), alpha_opt)  # (agent.update rebinds no log_alpha)
        if t % 1000 == 0:
            probe = torch.optim.SGD([agent.log_alpha], lr=0.1)  # near-miss: every 1000 steps
            agent.update(buffer.sample(256), probe)


def double_precision(model, loader, epochs, fp64):
    for epoch in range(epochs):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # expect: TD704 (.double() keeps it)
        for x, y in loader:
            if fp64:
                model = model.double()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()


def new_model_each_round(make_model, loader, rounds):
    for r in range(rounds):
        model = make_model(r)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # near-miss: a new model each round
        for x, y in loader:
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()


def pinn_lbfgs_rounds(model, rounds, residual):
    for r in range(rounds):
        lbfgs = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=500)  # expect: TD704

        def closure():
            lbfgs.zero_grad()
            loss = residual(model)
            loss.backward()
            return loss

        lbfgs.step(closure)


def k_fold(make_model, folds, loader, args):
    """A new model per fold needs a new optimizer; a new one per epoch restarts Adam's moments."""
    for fold in folds:
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)  # a new model: fine
        for epoch in range(args.epochs):
            lr = args.lr * 0.5 ** (epoch // 10)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)  # expect: TD704
            for x, y in loader:
                loss = model(x).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


def push_then_finetune(net, loader, epochs, run_epoch):
    """ProtoPNet: every 10th epoch fine-tunes the last layer for 20 iterations, rebuilding its
    SGD (and its momentum) at each one."""
    for epoch in range(epochs):
        run_epoch(net, loader)
        if epoch % 10 == 0:
            for _ in range(20):
                last = torch.optim.SGD(net.last_layer.parameters(), lr=1e-4, momentum=0.9)  # expect: TD704
                run_epoch(net, loader, last)


def kge_decay(model, train_step, iterator, init_step, max_steps, warm_up_steps, lr):
    """KnowledgeGraphEmbedding's run.py: a new Adam at a learning-rate drop whose step the
    branch itself moves on (x3): a handful of rebuilds, not one every step after it."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(init_step, max_steps):
        train_step(model, optimizer, iterator)
        if step >= warm_up_steps:
            lr = lr / 10
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)  # near-miss: the threshold moves
            warm_up_steps = warm_up_steps * 3


def gfn_warmup(policy, sample, iters, base_lr, warmup):
    """A GFlowNet trainer's warm-up: parameter groups rebuilt with a new `lr` every iteration,
    the same parameters in them, so Adam's moments restart at every step."""
    for it in range(iters):
        lr = base_lr * min(1.0, (it + 1) / warmup)
        opt = torch.optim.Adam([  # expect: TD704
            {"params": policy.net.parameters(), "lr": lr},
            {"params": [policy.log_z], "lr": lr * 100}])
        opt.zero_grad()
        sample(policy).backward()
        opt.step()


def per_head_groups(heads, sample, lrs):
    """A new head, and so new parameter groups, every iteration: a new optimizer is right."""
    for head, lr in zip(heads, lrs):
        opt = torch.optim.Adam([{"params": head.parameters(), "lr": lr}])  # near-miss: new params
        opt.zero_grad()
        sample(head).backward()
        opt.step()
