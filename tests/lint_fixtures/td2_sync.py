# TD201 / TD202 / TD203 fixtures.
import math

import numpy as np
import torch
import torch as T


def train(model, loader, optimizer, criterion, device, log_every=10):
    history = []
    for step, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())  # expect: TD201
        acc = (model(x).argmax(-1) == y).float().mean().cpu()  # expect: TD201
        total = float(loss)  # expect: TD201
        print(loss)  # expect: TD201
        s = f"loss={loss:.3f}"  # expect: TD201
        ids = y.tolist()  # expect: TD201
        T.cuda.synchronize()  # expect: TD202
        labels = torch.tensor(y.tolist(), device=device)  # expect: TD203 (its .tolist() is a part of the pattern, not a TD201 metric read)
        if step % log_every == 0:
            print(f"step {step} loss {loss.item():.3f}")  # gated: logged every N steps
        n = int(step)  # not a tensor
    print(loss.item())  # after the loop: once
    return history, acc, total, s, ids, labels, n


def train_step(model, batch, opt):
    out = model(batch)
    loss = out.mean()
    loss.backward()
    opt.step()
    return {"loss": float(loss.detach().cpu().item())}  # expect: TD201


def evaluate(model, loader):
    vals = []
    for x in loader:  # expect: TD602
        vals.append(model(x).sum().item())  # not a training loop: no TD201
    torch.cuda.synchronize()
    return vals


def epoch_loop(model, loader, opt, epochs):
    for epoch in range(epochs):
        running = torch.zeros(())
        for x in loader:
            loss = model(x).sum()
            loss.backward()
            opt.step()
            running += loss.detach()
        print(f"epoch {epoch}: {running.item():.3f}")  # once per epoch (outer loop)
    for x in loader:
        ids = torch.tensor([1, 2, 3], device="cuda")  # literal, not tensor data (no TD203)  # expect: TD511
    return ids


def train_distributed(model, loader, optimizer):
    import torch.distributed as dist

    for x in loader:
        model(x).sum().backward()
        optimizer.step()
        name = f"{dist.get_backend()}:all_reduce"  # a string, not a tensor
        grads = [p.grad for p in model.cpu().parameters()]  # moves a module
    return name, grads


def grad_check(module, x):
    out = module(x).sum()
    out.backward()  # backward alone (no optimizer step): not a training step
    return x.grad.cpu()


def train_with_checks(model, loader, opt, arr):
    best = 1e9
    for step, (x, y) in enumerate(loader):
        loss = model(x, y)
        if torch.isnan(loss):  # expect: TD201
            raise RuntimeError("nan")
        assert torch.isfinite(loss).all()  # expect: TD201
        if not loss.isnan().any():  # expect: TD201
            loss.backward()
        opt.step()
        if step % 100 == 0 and torch.isnan(loss):  # under the logging condition: fine
            print("nan at", step)
        value = float(loss.detach())  # expect: TD201
        if value < best:  # a Python float
            best = value
        if arr.any():  # not a tensor we know of
            pass
        if torch.is_grad_enabled():  # returns a Python bool
            pass


def train_tracking_best(model, loader, opt):
    best, seen = float("inf"), 0
    for x, y in loader:
        loss = model(x, y)
        loss.backward()
        opt.step()
        if loss < best:  # expect: TD201
            best = loss.detach()
        if (loss > 10).any():  # expect: TD201
            print("diverging")
        seen += 1
        if seen < 5:  # plain numbers: not a tensor we know of
            pass


def train_with_optional_profiling(model, loader, opt, args):
    for step, (x, y) in enumerate(loader):
        model(x, y).backward()
        opt.step()
        if args.profile:  # only when asked: not every step
            torch.cuda.synchronize()


def train_step(model, x, y, opt):
    model(x, y).backward()
    opt.step()
    torch.cuda.synchronize()  # expect: TD202
    if opt.timing:
        torch.cuda.synchronize()  # near-miss: only when asked


def time_forward(model, x):
    torch.cuda.synchronize()  # near-miss: no training step here
    return model(x)


class LitModel:
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.model(x, y)
        self.log("train_loss", loss.item())  # expect: TD201
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.model(*batch).item())  # not a training step


def train_with_config(model, loader, opt, cfg, kl_weight):
    for x, y in loader:
        loss = model(x, y)
        beta = float(kl_weight)  # a hyperparameter, not a tensor
        w = float(cfg.loss_weight)
        print("using", cfg.loss_fn)
        (beta * w * loss).backward()
        opt.step()
        print(float(loss))  # expect: TD201
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))  # expect: TD201
        curve = np.asarray(loss.detach())  # expect: TD201
        ok = np.asarray(cfg.loss_weight)  # a setting, not a tensor
        print("loss scale: {}".format(cfg.scaler.loss_scale))  # near-miss: a loss scaler's float
        print("logit scale: {}".format(model.logit_scale))  # expect: TD201 (CLIP's parameter)
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)  # returns None: no sync


def train_with_formatting(model, loader, opt):
    logs = {}
    for x, y in loader:
        out = model(x, y)
        out["loss"].backward()
        opt.step()
        for k, v in out.items():
            logs[k] = v.item()  # expect: TD201
        print("loss: {:.4f}".format(out["loss"]))  # expect: TD201
        loss = out["loss"]
        print("loss: {:.4f}".format(loss))  # expect: TD201
        print("loss: %.4f" % loss)  # expect: TD201
        print("step %d" % len(logs))  # a Python number


def train_rebuilding_ids(model, loader, opt):
    for x, b in loader:
        ids = torch.tensor(b.tolist()).long().cuda()  # expect: TD203
        model(x, ids).backward()
        opt.step()


def train_with_tensorboard(model, loader, opt, writer):
    for step, (x, y) in enumerate(loader):
        out = model(x)
        loss = out.loss
        loss.backward()
        opt.step()
        writer.add_scalar("loss", loss.item(), step)  # expect: TD201
        acc = (out.logits.argmax(-1) == y).float().mean()
        writer.add_scalar("acc", acc, step)  # expect: TD201
        writer.add_scalar("lr", opt.param_groups[0]["lr"], step)  # a Python float


def train_sac_entropy(actor, loader, opt, ent_opt):
    for batch in loader:
        ent_loss = None
        if ent_opt is not None:
            ent_loss = -(actor.log_alpha * batch).mean()
        if ent_loss is not None and ent_opt is not None:  # identity tests: Python bools
            ent_loss.backward()
            ent_opt.step()
        loss = actor(batch).mean()
        loss.backward()
        opt.step()


def train_with_accuracy(model, loader, opt):
    best_loss = None
    for x, y in loader:
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        opt.step()
        acc = (out.argmax(1) == y).sum().item() / len(y)  # expect: TD201
        print(f"acc {acc:.3f}")  # a Python float: .item() / len()
        best_loss = min(best_loss, loss) if best_loss is not None else loss
        print(f"best {best_loss:.3f}")  # expect: TD201


def dqn(envs, q_network, optimizer, obs, steps):
    """cleanrl's DQN/SAC/TD3: the policy's action goes to the environment on the host."""
    for _ in range(steps):
        q_values = q_network(torch.Tensor(obs))
        actions = torch.argmax(q_values, dim=1).cpu().numpy()  # the environment needs it
        obs, rewards, done, truncated, infos = envs.step(actions)
        obs, *_ = envs.step(q_values.argmax(1).cpu().numpy())  # the same, inline
        loss = q_values.sum()
        loss.backward()
        optimizer.step()
        q_max = q_values.max().cpu().numpy()  # expect: TD201
        print(q_max)


def log_step(loss, acc, logger):
    logger.info("loss %.4f acc %.3f", loss.item(), acc.item())  # expect: TD201 (called every step)


def seconds_since(start, clock):
    return clock.now().item() - start


def train_with_a_logging_helper(model, loader, opt, logger, clock):
    for step, (x, y) in enumerate(loader):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        opt.step()
        acc = (out.argmax(1) == y).float().mean()
        log_step(loss, acc, logger)  # its read is told in log_step, line 233
        if step % 100 == 0:
            log_step(loss, acc, logger)  # at the log interval: fine
        seconds_since(0.0, clock)  # reads no tensor it is given


class LoopTrainer:
    def __init__(self, model, opt, loader):
        self.model, self.opt, self.loader = model, opt, loader
        self.history = []
        self.step = 0

    def train_epoch(self):
        for x, y in self.loader:
            loss = self.model(x, y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self._record(loss)  # its read is told in _record
            self._record_now_and_then(loss)  # the read sits under a log interval

    def _record(self, loss):
        self.history.append(loss.detach().cpu().item())  # expect: TD201

    def _record_now_and_then(self, loss):
        self.step += 1
        if self.step % 100 == 0:
            self.history.append(loss.item())


def train_with_a_coverage_line(model, loader, opt, np):
    for step, (x, y) in enumerate(loader):
        loss = model(x, y)
        loss.backward()
        opt.step()
        coverage = (y.unsqueeze(0) == y.unsqueeze(1)).any(1).float().mean()
        host_mean = np.asarray(y.shape).mean()
        label = str(step).upper()
        print(f"cov {coverage:.2f}")  # expect: TD201
        print(f"shape mean {host_mean:.2f} {label}")  # NumPy's and a string's: no tensor


def train_counting_correct(model, loader, opt):
    total_correct = 0
    for x, y in loader:
        loss = model(x, y)
        loss.backward()
        opt.step()
        correct = (model(x).argmax(-1) == y).sum()
        total_correct += int(correct)  # expect: TD201
    return total_correct


def train_with_numpy_metric(model, loader, optimizer):
    for x, y in loader:
        loss = model(x).sum()
        loss.backward()
        optimizer.step()
        feats = model(x).detach().cpu().numpy()  # expect: TD201
        spread = np.abs(feats - feats.mean(0))
        print(spread.mean())  # NumPy's mean: the host copy above was the sync


def train_on_sampled_rows(model, X_dev, Y_dev, optimizer, steps, rng):
    for step in range(steps):
        idx = np.sort(rng.choice(len(X_dev), size=64, replace=False)).tolist()  # near-miss: NumPy's
        loss = torch.nn.functional.mse_loss(model(X_dev[idx]), Y_dev[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def accuracy(output, target, topk=(1,)):
    _, pred = output.topk(max(topk), 1, True, True)
    correct = pred.t().eq(target.reshape(1, -1))
    return [correct[:k].reshape(-1).float().sum(0).item() for k in topk]  # expect: TD201


class Classifier:
    def train_step(self, images, target):
        output = self.model(images)
        loss = self.criterion(output, target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.history.append(accuracy(output, target, topk=(1, 5)))  # read in accuracy, line 289


class Detectron2LikeTrainer:
    def run_step(self):
        loss_dict = self.model(next(self._data_loader_iter))
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        torch.cuda.synchronize()  # expect: TD202 (a step function: backward and the scaler's step)

    def _write_metrics(self, loss_dict):
        metrics = {k: v.detach().cpu().item() for k, v in loss_dict.items()}  # expect: TD201
        self.storage.put_scalars(**metrics)


def train_after_warmup(model, loader, opt, learning_starts):
    for global_step, (x, y) in enumerate(loader):
        model(x, y).backward()
        opt.step()
        if global_step > learning_starts:  # (true on every step once warm-up is over)
            torch.cuda.synchronize()  # expect: TD202
        if global_step % 1000 == 0:
            torch.cuda.synchronize()  # every 1000 steps: no finding


def train_with_a_shape_test(model, loader, opt):
    total = 0.0
    for x, y in loader:
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        if logits.shape[0] > 1:  # (a shape test: no logging switch, whatever the name)
            total += loss.item()  # expect: TD201
    return total


def nerf_train(model, images, poses, opt, steps, rgb_weights):
    for step in range(steps):
        img_i = torch.randint(0, images.shape[0], (1,)).item()  # near-miss: a CPU tensor
        order = torch.randperm(64).tolist()  # near-miss: made on the host
        pick = torch.randint(0, 64, (1,), device=images.device).item()  # expect: TD201
        neg = torch.multinomial(rgb_weights[pick], 1).item()  # expect: TD201 (of a device tensor)
        rgb = model(poses[img_i].cuda(), order[pick])
        loss = (rgb - images[img_i].cuda()).pow(2).mean()
        loss.backward()
        opt.step()


def train_with_host_sampler(model, loader, opt, sampler, finder, device):
    for src, dst in loader:  # (host tensors from the loader)
        neg = torch.from_numpy(sampler.sample(len(src)))
        info = finder.find(src.numpy(), neg.numpy())  # near-miss: .numpy() raises on CUDA: host data
        loss = model(src.to(device), dst.to(device), neg.to(device), info)
        loss.backward()
        opt.step()
        last = loss.detach().cpu().numpy()  # expect: TD201


def grid_rollout(policy, simulate, states, device, horizon):
    for t in range(horizon):
        s = torch.tensor(states, dtype=torch.float32, device=device)  # expect: TD203
        actions = policy(s).argmax(-1)
        states, rewards = simulate(states, actions.tolist())  # (unpacked from a host copy)
    return states


def beam_step(model, hyps, src, beam, vocab):
    for _ in range(50):
        log_probs = model(src)
        top_scores, top_idx = torch.topk(log_probs.view(-1), beam)
        new_hyps = []
        for s, idx in zip(top_scores.tolist(), top_idx.tolist()):
            b, w = divmod(idx, vocab)
            entry = (s, torch.tensor([w], device=src.device))  # expect: TD203
            new_hyps.append(entry)
        for k in range(beam):
            pos = torch.tensor([k], device=src.device)  # near-miss: a loop counter, no tensor data
            new_hyps.append(pos)
        hyps = new_hyps
    return hyps


class UserTower(torch.nn.Module):
    def forward(self, user_id, hist):
        mask = hist != 0
        lengths = mask.sum(1, keepdim=True)
        if (lengths == 0).any():  # expect: TD205
            lengths = lengths.clamp(min=1)
        return self.emb(hist).sum(1) / lengths


class ContrastHead(torch.nn.Module):
    def compute_preds(self, x, y, negatives):
        neg_is_pos = (y == negatives).all(-1)
        logits = torch.cosine_similarity(x, torch.cat([y[None], negatives]), dim=-1)
        if neg_is_pos.any():  # expect: TD205
            logits[1:] = logits[1:].masked_fill(neg_is_pos, float("-inf"))
        return logits

    def forward(self, x, y, negatives):
        return self.compute_preds(x, y, negatives)

    def describe(self, x, n_layers):
        depth = n_layers * 2
        if depth > 4:  # near-miss: Python numbers in a method forward never runs
            return x
        return x


def tacotron_train(model, loader, optimizer, criterion, dim):
    for x, y in loader:
        loss = criterion(model(x), y)
        reduced_loss = loss.item()  # expect: TD201
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if math.isnan(grad_norm) or math.isinf(reduced_loss):  # expect: TD201
            print("overflow")
        scale = math.sqrt(dim)  # near-miss: a Python number
        print(scale)


def balance_loss(router_probs, n_experts):
    loss = sum((p.mean(0) ** 2).sum() for p in router_probs)
    return loss.float() / len(router_probs)


def mean_lr(optimizer):
    return sum(g["lr"] for g in optimizer.param_groups) / len(optimizer.param_groups)


def moe_train(model, loader, optimizer):
    for x, y in loader:
        logits, probs = model(x)
        aux = balance_loss(probs, 8)
        loss = torch.nn.functional.cross_entropy(logits, y) + 0.01 * aux
        loss.backward()
        optimizer.step()
        print("aux", aux)  # expect: TD201
        lr = mean_lr(optimizer)
        print("lr", lr)  # near-miss: a function of the file returning a Python number
