"""TD712 work done on every training step whose result is read only every N steps."""

import time
from time import perf_counter

import torch


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        out = model(x)
    return torch.nn.functional.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean()


def train_iter(epoch, model, opt, x, y, masks, print_every):  # pytorch/examples GCN's shape
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    loss_train, acc_train = evaluate(model, x[masks[0]], y[masks[0]])  # expect: TD712
    loss_val, acc_val = evaluate(model, x[masks[1]], y[masks[1]])  # expect: TD712
    if epoch % print_every == 0:
        print(epoch, loss_train, acc_train, loss_val, acc_val)


def loop_logging_every_n(model, opt, loader, val_x, val_y, log_every):
    for step, (x, y) in enumerate(loader):
        model(x).sum().backward()
        opt.step()
        accuracy = evaluate(model, val_x, val_y)  # expect: TD712
        should_log = step % log_every == 0
        if should_log:
            print(step, accuracy)


def read_every_step(model, opt, loader, val_x, val_y, history):
    for step, (x, y) in enumerate(loader):
        model(x).sum().backward()
        opt.step()
        accuracy = evaluate(model, val_x, val_y)  # kept every step: nothing to move
        history.append(accuracy)
        if step % 10 == 0:
            print(accuracy)


def read_in_the_else(model, opt, loader):
    for step, (x, y) in enumerate(loader):
        out = model(x)  # both branches read it (a GAN's alternating steps)
        if step % 2 == 0:
            out.sum().backward()
            opt.step()
        else:
            out.detach().mean().backward()


def cheap_or_host_values(model, opt, loader, log_every):
    t0 = time.time()
    for step, (x, y) in enumerate(loader):
        loss = model(x).sum()
        loss.backward()
        opt.step()
        now = time.time()  # a clock: nothing worth moving
        start = perf_counter()  # a clock imported by name (mamba.py's step timer)
        value = loss.detach()  # a host-side read is TD201's business, not this rule's
        if step % log_every == 0:
            print(value, now - t0, perf_counter() - start)


def bookkeeping_values(model, opt, scheduler, loader, timer, log_every):
    for step, (x, y) in enumerate(loader):
        model(x).sum().backward()
        opt.step()
        scheduler.step()
        lr = scheduler.get_last_lr()[0]  # a scheduler's value: nothing worth moving
        elapsed = timer.elapsed()  # a timer's
        if step % log_every == 0:
            print(lr, elapsed)


def under_a_condition_already(model, opt, loader, val_x, val_y, log_every, validate):
    for step, (x, y) in enumerate(loader):
        model(x).sum().backward()
        opt.step()
        if validate:
            accuracy = evaluate(model, val_x, val_y)  # not every step: under an if
            if step % log_every == 0:
                print(accuracy)


def not_a_training_loop(model, loader, every):
    for step, x in enumerate(loader):
        out = model(x)
        if step % every == 0:
            print(out)


def train_clipped(model, loader, optimizer, max_norm, log_every, writer):
    for step, (x, y) in enumerate(loader):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # near-miss: it clips
        optimizer.step()
        if step % log_every == 0:
            writer.add_scalar("grad_norm", grad_norm, step)


def train_logging_accuracy(model, loader, optimizer, logger, log_every=100):
    for step, (images, labels) in enumerate(loader):
        logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        acc = (logits.argmax(-1) == labels).float().mean()  # expect: TD712 (`logits` is no logger)
        lr = logger.current_lr()  # near-miss: a logger's bookkeeping
        if step % log_every == 0:
            print(step, acc.item(), lr)


def train_accuracy_in_two_lines(model, loader, optimizer, best):
    for step, (x, y) in enumerate(loader):
        out = model(x)
        out.sum().backward()
        optimizer.step()
        preds = out.argmax(dim=-1)
        acc = (preds == y).float().mean()  # expect: TD712 (through an intermediate name)
        improved = out.sum().item() < best  # expect: TD201 (a host read: TD201, not TD712)
        if step % 500 == 0:
            print(step, acc, improved)


class ASRModule(LightningModule):
    def training_step(self, batch, batch_idx):
        feats, lens, tokens = batch
        log_probs, out_lens = self(feats, lens)
        loss = torch.nn.functional.ctc_loss(log_probs, tokens, out_lens, lens)
        hyps = greedy_decode(log_probs.detach(), out_lens)  # expect: TD712
        frames = lens.float().mean()  # near-miss: logged every step
        if batch_idx % 200 == 0:
            print(batch_idx, word_error_rate(hyps, tokens))
        self.log("frames", frames)
        return loss


def dqn(env, agent, replay, frames, train_every, log_every, probe_states):
    for step in range(frames):
        replay.push(env.step(agent.act()))
        if step % train_every == 0:
            info = agent.learn(replay.sample(32))  # near-miss: the training step itself
            with torch.no_grad():
                q_probe = agent.online(probe_states).max(1).values.mean()  # expect: TD712
            for _ in range(2):
                target = agent.target(probe_states)  # near-miss: read in the gate it sits in
                agent.fit(target)
            if step % log_every == 0:
                print(step, info, q_probe.item())


def mae_epoch(model, loader, optimizer, epoch, args):
    for it, (x, _) in enumerate(loader):
        lr = adjust_learning_rate(optimizer, epoch + it / len(loader), args)  # near-miss: sets the lr
        loss = model(x)
        loss.backward()
        optimizer.step()
        if it % 50 == 0:
            print(it, lr, loss.item())


def rpc_pairs(model, loader, opt, rank, rpc, dst):
    for x in loader:
        model(x).sum().backward()
        opt.step()
        res = rpc.rpc_sync(dst, torch.add, args=(x, x))  # near-miss: rank % 2 picks a process, not a step
        if rank % 2 == 0:
            print(res)


def name_bound_again_after_loop(model, opt, loader, val_x, val_y, print_freq, epochs):
    best = float("inf")
    for epoch in range(epochs):  # CSRNet's shape: `mae` is the batch's, then the validation's
        for step, (x, y) in enumerate(loader):
            model(x).sum().backward()
            opt.step()
            mae = evaluate(model, x, y)  # expect: TD712
            if step % print_freq == 0:
                print(step, mae)
        mae, mse = evaluate(model, val_x, val_y)
        if mae < best:
            best = mae


def last_step_value_read_after_loop(model, opt, loader, val_x, val_y, print_freq):
    for step, (x, y) in enumerate(loader):
        model(x).sum().backward()
        opt.step()
        mae = evaluate(model, x, y)  # the last step's value is read after the loop
        if step % print_freq == 0:
            print(step, mae)
    return mae
