# TD101 / TD102 fixtures. "# expect: CODE" marks every line that must fire; others must not.
import numpy as np
import torch
import torch as T
from torch.linalg import cholesky, inv, solve
from torch.linalg import solve_triangular as st


def positive(A, B, S, diff, rhs, xs, L):
    y = torch.linalg.inv(A) @ B  # expect: TD101
    z = B @ T.inverse(A)  # expect: TD101
    w = torch.matmul(inv(A), B)  # expect: TD101
    v = A.inverse().mm(B)  # expect: TD101
    S_inv = torch.linalg.pinv(S)  # expect: TD101
    d = (diff @ S_inv * diff).sum(-1)
    Pi = T.linalg.inv(S)  # expect: TD101
    e = torch.einsum("ij,jk->ik", Pi, B)
    for b in rhs:
        xs.append(solve(A, b))  # expect: TD102
        xs.append(st(L, b, upper=False))  # expect: TD102
    for _ in range(10):
        C = cholesky(S)  # expect: TD102
        vals, vecs = T.linalg.eigh(A.T)  # expect: TD102
    out = [torch.cholesky_solve(b, L) for b in rhs]  # expect: TD102
    return y, z, w, v, d, e, C, vals, vecs, out


def negative(A, B, S, batch, rhs):
    Ainv = torch.linalg.inv(A)
    result = torch.linalg.inv(S)  # returned, never multiplied
    scaled = Ainv * 2.0  # elementwise, not a product with the inverse as a matrix
    for i in range(len(batch)):
        L = torch.linalg.cholesky(batch[i])  # expect: TD103 (not TD102: the matrix changes every iteration)
        x = torch.linalg.solve(L, rhs[i])  # L is reassigned in the loop
    for M in batch:
        torch.linalg.eigh(M)  # loop variable
    for step in range(3):
        S = S + 1.0
        torch.linalg.cholesky(S)  # S is reassigned in the loop
    for step in range(3):
        A.add_(1.0)
        torch.linalg.solve(A, B)  # A is mutated in place
    X = torch.linalg.solve(A, torch.stack(rhs, -1))  # batched, outside any loop
    return result, scaled, x, X


def outside_loop_iter(A, B):
    for row in torch.linalg.cholesky(A):  # the iterable is evaluated once
        print(row)


def inverse_shapes(A, x, b):
    import torch.nn.functional as F

    out = torch.linalg.inv(A).unsqueeze(0) @ x  # expect: TD101
    A_inv, info = torch.linalg.inv_ex(A)  # expect: TD101
    W = torch.linalg.inv(A)  # expect: TD101
    return out, A_inv @ b, F.linear(x, W)


def gp_posterior_per_query(K, noise, queries, n):
    means = []
    for q in queries:
        L = torch.linalg.cholesky(K + noise * torch.eye(n))  # expect: TD102
        means.append(torch.cholesky_solve(q, L))
    return means


def cholesky_per_image(covs, rhs):
    out = []
    for b in range(covs.shape[0]):
        L = torch.linalg.cholesky(covs[b])  # expect: TD103
        out.append(torch.cholesky_solve(rhs[b], L))  # the same loop: reported once
    return torch.stack(out)


def whiten_each(feats, eps):
    out = []
    for b in range(feats.shape[0]):
        cov = feats[b].T @ feats[b] + eps * torch.eye(feats.shape[2])
        L = torch.linalg.cholesky(cov)  # expect: TD103
        out.append(torch.linalg.solve_triangular(L, feats[b].T, upper=False))
    return out


def logdets(covs):
    return torch.stack([torch.logdet(c) for c in covs])  # expect: TD103


def per_item_near_misses(F, Q, H, R, P, zs, A, model, loader, opt, weights):
    for t in range(len(zs)):  # a Kalman filter: each matrix depends on the last iteration
        P = F @ P @ F.T + Q
        S = H @ P @ H.T + R
        torch.linalg.cholesky(S)
    states = [A]
    for t in range(10):  # a recurrence over a list the loop grows
        states.append(torch.linalg.matrix_exp(states[t]))
    for x, y in loader:  # a training loop: the matrices change with the parameters
        L = torch.linalg.cholesky(x.T @ x)
        model(L).sum().backward()
        opt.step()
    for w in weights:  # layers' weights have different shapes: nothing to stack
        torch.linalg.svdvals(w)
    for i in range(len(weights)):
        torch.linalg.svdvals(weights[i])


def solve_each_while(covs, xs):
    out = []
    i = 0
    while i < len(covs):  # a counter loop: i is its per-iteration index
        chol = torch.linalg.cholesky(covs[i])  # expect: TD103
        out.append(torch.cholesky_solve(xs[i], chol))
        i += 1
    return out


def mahalanobis_on_the_host(x, y, cov):
    import numpy as np

    prec = np.linalg.inv(cov.detach().cpu().numpy())  # expect: TD101
    d = (x - y).detach().cpu().numpy()
    table = np.linalg.inv(np.eye(3) * 2.0)  # NumPy's own data: not a tensor's
    return (d @ prec * d).sum(-1), table @ np.ones(3)


def class_scores(feats, means, covs):
    scores = []
    for k in range(means.shape[0]):  # expect: TD304 (the item is computed with, not only factored)
        prec = covs[k].inverse()  # expect: TD101, TD103
        d = feats - means[k]
        scores.append(((d @ prec) * d).sum(-1))
    return torch.stack(scores, 1)


def host_mahalanobis(feats, cov):
    icov = np.linalg.pinv(cov.detach().cpu().numpy())  # expect: TD101
    f = feats.cpu().numpy()
    return np.einsum("nd,de,ne->n", f, icov, f)


def host_inverse_kept(cov):
    return np.linalg.inv(cov.cpu().numpy())  # near-miss: returned, never multiplied here


def part_covariance_factors(feats, eps):
    B, K, d = feats.shape
    eye = torch.eye(d)
    factors = []
    for i in range(B):  # expect: TD304 (the item is computed with, not only factored)
        x = feats[i] - feats[i].mean(0)
        cov = x.T @ x / (K - 1) + eps * eye
        factors.append(torch.linalg.cholesky(cov))  # expect: TD103
    return torch.stack(factors)


def running_filter(P, F, steps):
    for _ in range(steps):
        S = F @ P @ F.T
        P = torch.linalg.inv(S)  # expect: TD101 (no TD103: P carries from one step to the next)
    return P


def mixture_nll(samples, means, covs, d):
    out = []
    for k, (mu, sigma) in enumerate(zip(means, covs)):
        diff = samples - mu
        sign, logdet = torch.linalg.slogdet(sigma)  # expect: TD103 (sigma: an item of covs)
        out.append((diff * torch.linalg.solve(sigma, diff.T).T).sum(-1) + logdet)
    for k, (sigma, weight) in enumerate(zip(layer_weights, covs)):
        out.append(torch.linalg.slogdet(sigma)[1])  # near-miss: an item of a list of weights
    return torch.stack(out, dim=1)


def factors_of_unbound(covs):
    first = torch.stack([torch.linalg.cholesky(c) for c in covs.unbind(0)])  # expect: TD103
    rest = []
    for c in torch.unbind(covs):
        rest.append(torch.linalg.cholesky(c))  # expect: TD103
    return first, rest


def implicit_heat_equation(u0, laplacian, dt, n_steps):
    A = torch.eye(u0.shape[0]) - dt * laplacian
    L = torch.linalg.cholesky(A)
    u = u0.unsqueeze(-1)
    for _ in range(n_steps):
        u = torch.cholesky_solve(u, L)  # near-miss: factored once; each state from the last
    v = u0.unsqueeze(-1)
    for _ in range(n_steps):
        v = torch.linalg.solve(A, v)  # expect: TD102 (factors A again for each state)
    return u, v


def logdets_legacy(w):
    out = []
    for b in range(w.shape[0]):
        out.append(torch.slogdet(w[b])[1])  # expect: TD103 (the legacy spelling)
    return torch.stack(out)


class ExactGP(torch.nn.Module):
    def predict_rebuilding(self, xs, bs=4096):
        n = self.x.shape[0]
        out = []
        for i in range(0, xs.shape[0], bs):
            K = self.kernel(self.x, self.x) + self.noise() * torch.eye(n)
            L = torch.linalg.cholesky(K)  # expect: TD102 (K is the same every iteration)
            out.append(torch.linalg.solve_triangular(L, self.kernel(self.x, xs[i:i + bs]), upper=False))
        return torch.cat(out)

    def predict(self, xs, bs=4096):
        L = torch.linalg.cholesky(self.kernel(self.x, self.x))
        out = []
        for i in range(0, xs.shape[0], bs):
            Ks = self.kernel(self.x, xs[i:i + bs])
            out.append(torch.linalg.solve_triangular(L, Ks, upper=False))  # near-miss: chunks
        return torch.cat(out)

    def fit_hyper(self, opt, steps):
        for _ in range(steps):
            H = self.precision()  # the parameters change: the optimizer steps below
            torch.linalg.solve(H, self.theta).sum().backward()  # near-miss
            opt.step()


def kabsch_per_pair(src, tgt):
    rotations = []
    for b in range(src.shape[0]):  # expect: TD304 (the item is computed with, not only factored)
        mu_s, mu_t = src[b].mean(0), tgt[b].mean(0)
        H = (src[b] - mu_s).T @ (tgt[b] - mu_t)
        U, S, Vh = torch.linalg.svd(H)  # expect: TD103
        if torch.linalg.det(Vh.T @ U.T) < 0:
            Vh = Vh.clone()
            Vh[-1] *= -1
        rotations.append(Vh.T @ U.T)
    return torch.stack(rotations)


def inverse_indexed(R, p, b):
    local = torch.linalg.inv(R)[:, None] @ p  # expect: TD101
    R_inv = torch.inverse(R)  # expect: TD101
    scale = torch.linalg.inv(R)[..., 0, 0] * b  # near-miss: one entry scales b (no product)
    return local, R_inv[0] @ b, scale
