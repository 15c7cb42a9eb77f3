# Samplers whose results a training step differentiates (GFlowNet's trajectory balance,
# REINFORCE): their loops run the policy with autograd on by design; a sampler only logged
# from still needs no_grad.
import torch


def sample_trajectories(env, policy, batch, horizon):
    states = env.reset(batch)
    sum_logpf = torch.zeros(batch)
    for t in range(horizon):  # near-miss: the log-probabilities summed here are the loss's
        logits = policy(env.one_hot(states))
        logp = logits.log_softmax(-1)
        actions = torch.multinomial(logp.exp(), 1).squeeze(1)
        sum_logpf = sum_logpf + logp.gather(1, actions[:, None]).squeeze(1)
        states = env.step(states, actions)
    return states, sum_logpf


def sample_episode(env, policy, horizon):
    obs, logps = env.reset(1), []
    for t in range(horizon):  # near-miss: REINFORCE differentiates the episode's log-probs
        dist = torch.distributions.Categorical(logits=policy(obs))
        action = dist.sample()
        logps.append(dist.log_prob(action))
        obs = env.step(action)
    return torch.stack(logps)


def sample_for_display(env, policy, horizon):
    states = env.reset(16)
    for t in range(horizon):  # expect: TD602 (its results are only printed)
        states = env.step(states, policy(env.one_hot(states)).argmax(-1))
    return states


def train(env, policy, log_z, opt, scaler, iters, horizon):
    for it in range(iters):
        final, logpf = sample_trajectories(env, policy, 16, horizon)
        log_r = env.log_reward(final)
        loss = (log_z + logpf - log_r).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        logps = sample_episode(env, policy, horizon)
        pg = -(logps.sum() * env.last_return)
        scaler.scale(pg).backward()
        scaler.step(opt)
        if it % 100 == 0:
            print(sample_for_display(env, policy, horizon))



class Agent:
    def sample_many(self, policy, n):
        states = self.reset(n)
        logps = []
        while not self.done(states):  # near-miss: a method whose log-probs the worker trains
            dist = torch.distributions.Categorical(logits=policy(states))
            action = dist.sample()
            logps.append(dist.log_prob(action))
            states = self.step(states, action)
        return torch.stack(logps).sum(0)

    def sample_for_logs(self, policy, batches):
        return [policy(b).argmax(-1) for b in batches]  # expect: TD602 (only logged)


def worker(agent, policy, opt, batches):
    log_ratio = agent.sample_many(policy, 16)
    loss = (log_ratio ** 2).mean()
    loss.backward()
    opt.step()
    print(agent.sample_for_logs(policy, batches))


def evaluate_split(model, batches):
    out = []
    for b in batches:  # expect: TD602 (another script's `evaluate_split` is trained on)
        out.append(model(b))
    return out


def finetune(model, opt, batches):
    model.eval()
    print(evaluate_split(model, batches))
