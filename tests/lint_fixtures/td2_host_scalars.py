"""TD201: a number cast from a tensor a torch factory made on the host (no device) is no
sync; an action handed to the environment through an element of a host list is the
environment's (the env needs it on the host). Blind corpus 37: a Neural Process's context
sizes, a Dreamer agent's action."""
import torch


def split_context(x, y, max_ctx, max_tgt):
    n_ctx = torch.randint(3, max_ctx, ()).item()
    n_tgt = torch.randint(n_ctx, n_ctx + max_tgt, ())
    idx = torch.randperm(x.shape[1], device=x.device)[: int(n_tgt)]  # near-miss: made on the host
    n_dev = torch.randint(3, max_ctx, (), device=x.device)
    keep = int(n_dev)  # expect: TD201 (a device tensor)
    return x[:, idx[:n_ctx]], y[:, idx[:keep]]


def train(model, opt, data, env, policy, obs, steps):
    for step in range(steps):
        x, y = data()
        xc, yc = split_context(x.cuda(), y.cuda(), 50, 50)
        width = float(torch.rand(()))  # near-miss: made on the host
        loss = model(xc, yc, width).mean()
        loss.backward()
        opt.step()
        a_idx = policy(obs).argmax(-1).tolist()  # near-miss: the action goes to env.step
        obs, r, done = env.step(a_idx[0])
        probs = policy(obs).softmax(-1).tolist()  # expect: TD201
        print(probs[0])
