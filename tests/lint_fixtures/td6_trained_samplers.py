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
