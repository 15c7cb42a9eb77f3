"""A function a DQN's training loop calls every step that returns the greedy action read to
the host (``return q.argmax(1).item()``), handed to ``env.step``: the environment needs it on
the host, as it does an action read in the loop itself. A helper returning a metric read the
same way is still told."""
import torch


@torch.no_grad()
def act(net, obs):
    return net(obs.cuda()).argmax(1).item()


def td_error(net, obs, target):
    return (net(obs.cuda()) - target).abs().mean().item()  # expect: TD201


def train(env, net, opt, steps):
    obs = env.reset()
    errors = []
    for _ in range(steps):
        a = act(net, obs)
        obs, r, done = env.step(a)
        loss = net(obs.cuda()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(td_error(net, obs, r))
