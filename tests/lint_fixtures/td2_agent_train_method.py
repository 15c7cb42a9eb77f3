"""A step loop whose update is a method of the script's agent class (``agent.train(replay)``,
sfujim/TD3's ``policy.train(replay_buffer, batch_size)``): a training loop one call away."""
import torch


class Agent:
    def __init__(self, net):
        self.net = net
        self.opt = torch.optim.Adam(net.parameters())

    def act(self, obs):
        return self.net(obs)

    def train(self, batch):
        loss = self.net(batch).pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


class Recorder:
    def train(self, flag=True):
        self.on = flag


def run(env, net, steps, start):
    agent = Agent(net)
    ret = 0.0
    for t in range(steps):
        r = env.step(agent.act(t))
        ret += r.item()  # expect: TD201
        if t >= start:
            agent.train(r)
            torch.cuda.synchronize()  # expect: TD202


def watch(env, net, steps):
    rec = Recorder()
    ret = 0.0
    for t in range(steps):
        r = env.step(net(t))
        rec.train(True)
        ret += r.item()
    return ret
