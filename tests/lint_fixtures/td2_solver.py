# TD206 fixtures: a solver's convergence test read on the host every iteration.
import numpy as np
import torch


def sinkhorn(K, a, b, tol=1e-6):
    u = torch.ones_like(a)
    err = 1.0
    while err > tol:
        v = b / (K.T @ u)
        u2 = a / (K @ v)
        err = (u2 - u).abs().max().item()  # expect: TD206
        u = u2
    return u


def power_iteration(A, x, max_iter=100):
    for it in range(max_iter):
        y = A @ x
        y = y / y.norm()
        if torch.norm(y - x) < 1e-6:  # expect: TD206
            break
        x = y
    return x


def fixed_point(f, x, eps):
    while True:
        x_new = f(x)
        delta = torch.linalg.vector_norm(x_new - x)
        x = x_new
        if delta < eps:  # expect: TD206
            break
    return x


def close_enough(f, x, max_iter):
    for _ in range(max_iter):
        x_new = f(x)
        if torch.allclose(x_new, x):  # expect: TD206
            break
        x = x_new
    return x


def float_read(f, x, tol, max_iter):
    for _ in range(max_iter):
        x_new = f(x)
        change = float((x_new - x).abs().max())  # expect: TD206
        x = x_new
        if change < tol:
            break
    return x


def conjugate_gradient(apply_A, b, tol, max_iter):
    x, r = torch.zeros_like(b), b.clone()
    b_norm = float(b.norm())
    for _ in range(max_iter):
        x, r = x + 0.1 * r, r - 0.1 * apply_A(r)
        res = float(r.norm())  # expect: TD206
        if res < tol * b_norm:  # a relative tolerance: arithmetic of a tolerance name
            break
    return x


def scaled_size(xs, x, max_iter):
    for _ in range(max_iter):
        x = x * 0.5
        if x.numel() < 2 * len(xs):  # no tolerance in the arithmetic: not a stop test
            break
    return x


# ---- near misses: these lines stay silent ----------------------------------------------------
def periodic(K, a, b, tol=1e-6, max_iter=1000):
    u = torch.ones_like(a)
    for it in range(max_iter):
        u2 = a / (K @ (b / (K.T @ u)))
        if it % 10 == 0 and (u2 - u).abs().max() < tol:  # tested every 10 iterations
            break
        u = u2
    return u


def periodic_read(f, x, tol, max_iter):
    for it in range(max_iter):
        x_new = f(x)
        if it % 20 == 0:
            err = (x_new - x).abs().max().item()  # read every 20 iterations
            if err < tol:
                break
        x = x_new
    return x


def fixed_count(K, a, b, n_iter=100):
    u = torch.ones_like(a)
    for _ in range(n_iter):  # no test at all
        u = a / (K @ (b / (K.T @ u)))
    return u


def host_solver(A, x, tol):
    err = 1.0
    while err > tol:  # NumPy on the host: nothing to sync
        x_new = A @ x
        err = np.abs(x_new - x).max()
        x = x_new
    return x


def python_loop(values, tol):
    prev, cur = 0.0, 1.0
    while abs(cur - prev) > tol:  # Python numbers
        prev, cur = cur, (cur + values / cur) / 2
    return cur


def train(model, loader, opt, tol):
    for step in range(1000):
        loss = model(next(loader)).sum()
        loss.backward()
        opt.step()
        if loss.item() < tol:  # expect: TD201
            break


def barycenter(Cs, C, inner_solve, tol, max_iter):
    err = 1.0
    while err > tol:  # each iteration runs inner solvers with their own stop tests
        plans = [inner_solve(C, Cs[s], max_iter=max_iter, tol_rel=1e-5) for s in range(len(Cs))]
        C_new = torch.stack(plans).mean(0)
        err = torch.norm(C_new - C)
        C = C_new
    return C


def greedy(gains, k, eps):
    chosen = []
    while len(chosen) < k:
        i = int(torch.argmax(gains).item())  # the loop needs this read every iteration anyway
        best = gains[i].item()
        if best < eps:  # so testing less often would not remove the wait
            break
        chosen.append(i)
        gains = gains - gains[i]
    return chosen


@torch.no_grad()
def kmeans(x, centers, iters):
    for _ in range(iters):
        assign = torch.cdist(x, centers).argmin(1)
        new_centers = torch.zeros_like(centers).index_add_(0, assign, x)
        new_centers = new_centers / torch.bincount(assign, minlength=len(centers))[:, None]
        if torch.allclose(new_centers, centers, atol=1e-4):  # expect: TD206 (its atol= is no inner solver)
            break
        centers = new_centers
    return centers


@torch.no_grad()
def draft_tokens(draft, seq, cfg):
    out = []
    for _ in range(cfg.gamma):  # speculative decoding: the draft stops early when unsure
        probs = torch.softmax(draft(seq)[:, -1], -1)  # expect: TD604 (no cache)
        if probs.max().item() < cfg.draft_confidence:  # expect: TD206
            break
        tok = probs.argmax(-1, keepdim=True)
        out.append(tok)
        seq = torch.cat([seq, tok], dim=1)
    return out


def march_until_opaque(field, o, d, step, min_trans, far):
    t = torch.zeros_like(o[:, 0])
    trans = torch.ones_like(t)
    while True:
        sigma = field(o + t[:, None] * d)
        trans = trans * torch.exp(-sigma * step)
        t = t + step
        if trans.max().item() < min_trans or t.min() > far:  # expect: TD206
            break
    return t


def decode_until_length(step_fn, ids, max_len):
    while True:
        ids = step_fn(ids)
        if ids.shape[1] >= max_len:  # near-miss: a length limit, no tensor read
            break
    return ids


def grow_until_count(sample, pts, max_points):
    for it in range(1000):
        pts = torch.cat([pts, sample()])  # expect: TD306 (TD306 grows it; the stop test is fine)
        if len(pts) > max_points:  # near-miss: len() of a tensor is its shape, no sync
            break
    return pts


def build_molecule(policy, mdp, max_blocks, min_blocks):
    m = mdp.empty()
    for t in range(max_blocks):
        logits = policy(mdp.featurize(m))
        action = torch.distributions.Categorical(logits=logits).sample().item()
        if t >= min_blocks and action == 0:  # near-miss: the counter against a minimum, an exact stop action
            break
        m = mdp.add_block_to(m, action - 1)
    return m
