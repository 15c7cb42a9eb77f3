"""TD713 the model moved every step; TD714 retain_graph=True on a step's only backward; TD705,
TD707, TD710 in a helper the loop calls every step, and the guards that leave them out."""
import copy
import gc

import torch
import torch.distributed as dist


def train(model, loader, opt, device):
    for x, y in loader:
        model.to(device)  # expect: TD713
        model.train().cuda()  # expect: TD713 (train() returns the model)
        loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward(retain_graph=True)  # expect: TD714
        opt.step()


def train_gan(generator, discriminator, loader, opt_g, opt_d):
    for real in loader:
        fake = generator(torch.randn(real.shape[0], 16))
        d_loss = discriminator(fake).mean() - discriminator(real).mean()
        d_loss.backward(retain_graph=True)  # a second backward goes through fake: no finding
        opt_d.step()
        g_loss = -discriminator(fake).mean()
        g_loss.backward()
        opt_g.step()


def per_output_grads(outs, inputs):
    for out in outs:  # one graph, a backward per output: no finding
        out.sum().backward(retain_graph=True)
        inputs.grad = None


def train_moved_once(model, loader, opt, device):
    model.to(device)  # before the loop: no finding
    for x in loader:
        loss = model(x.to(device)).sum()  # the data, not the model: no finding
        loss.backward()
        opt.step()


def train_with_accelerate(model, loader, optimizer, accelerator, scaler):
    for x in loader:
        loss = model(x).sum()
        accelerator.backward(loss, retain_graph=True)  # expect: TD714 (accelerate's backward)
        optimizer.step()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # expect: TD705 (the guard holds on every GPU step)
        if x.shape[0] % 2:
            torch.cuda.empty_cache()  # near-miss: under a condition on the step


class Trainer:
    def run_step(self):
        self.model.cuda()  # expect: TD713 (run_step: backward and an optimizer step)
        loss = self.model(next(self.batches))
        loss.backward()
        self.optimizer.step()


def fit_offsets(render, loss_terms, opt, iters, split):
    for it in range(iters):
        image_loss, reg_loss = loss_terms(render())
        loss = image_loss + reg_loss
        opt.zero_grad()
        if split:
            image_loss.backward(retain_graph=True)  # a second backward follows: needed
            reg_loss.backward()
        else:
            loss.backward(retain_graph=True)  # expect: TD714 (this branch's only backward)
        opt.step()


def lightning_main(model, train_loader, dev_loader, pl, debug):
    torch.autograd.set_detect_anomaly(True)  # expect: TD702
    trainer = pl.Trainer(accelerator="gpu", max_epochs=10, detect_anomaly=True)  # expect: TD702
    probe = pl.Trainer(accelerator="gpu", max_epochs=1, detect_anomaly=debug)  # near-miss: a flag
    trainer.fit(model, train_loader, dev_loader)
    probe.fit(model, train_loader)


def dqn_loop(env, agent, replay, frames, learn_start, train_every, log_every):
    obs = env.reset()
    for step in range(frames):
        obs, reward, done, _ = env.step(agent.act(obs))
        replay.push(obs, reward, done)
        if step >= learn_start and step % train_every == 0:
            loss = agent.learn(replay.sample(32))
            gc.collect()  # expect: TD710 (the block that trains: every training step)
            if step % log_every == 0:
                print(step, float(loss))
        if step % 10_000 == 0:
            gc.collect()  # near-miss: every 10,000 environment steps, no training there


def ddpm_train(diffusion, loader, opt, device, p_uncond):
    opt = torch.optim.AdamW(diffusion.parameters(), lr=1e-4)
    for xb, yb in loader:
        diffusion.cuda()  # expect: TD713 (diffusion.parameters(): a module)
        keep = (torch.rand(yb.shape[0]) > p_uncond).cuda()  # expect: TD204
        loss = diffusion.loss(xb.to(device), torch.where(keep, yb.to(device), 2))
        loss.backward()
        opt.step()


def accelerate_loop(accelerator, model, loader, opt):
    for batch in loader:
        with accelerator.accumulate(model):
            accelerator.backward(model(batch).mean())
            opt.step()
            opt.zero_grad()
        if accelerator.sync_gradients:  # (every optimizer step)
            gc.collect()  # expect: TD710


def evolution(es, policy, envs, generations, device):
    for gen in range(generations):
        policy.to(device)  # expect: TD713 (ES: an optimizer steps on estimated gradients)
        es.tell(es.rollout(envs, policy))
        es.opt.step()


def accumulate_scaled(model, loader, optimizer, accum):
    for i, batch in enumerate(loader):
        loss = model(batch).sum()
        (loss / accum).backward(retain_graph=True)  # expect: TD714 (the loss, scaled)
        if (i + 1) % accum == 0:
            optimizer.step()
            optimizer.zero_grad()


def drop_cached_blocks():
    torch.cuda.empty_cache()  # expect: TD705 (the loop below calls this every step)


def trim_after_validation():
    torch.cuda.empty_cache()  # near-miss: called once per epoch, outside the batch loop


def run_epochs(model, loader, opt, epochs):
    for _ in range(epochs):
        for batch in loader:
            opt.zero_grad()
            model(batch).mean().backward()
            opt.step()
            drop_cached_blocks()
        trim_after_validation()


def report_on_test_iterations(iteration, testing_iterations):
    if iteration not in testing_iterations:
        return
    torch.cuda.empty_cache()  # near-miss: an early return leaves it to the test iterations


def synchronize():
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return
    dist.barrier()  # expect: TD707 (the guard asks about the run: it holds on every step)


def barrier_on_save(step, save_steps):
    if step in save_steps:
        dist.barrier()  # near-miss: a save's barrier, under a test of the step
    if step % 1000:
        return
    gc.collect()  # near-miss: an early return leaves it to one step in 1000


def sweep_garbage():
    gc.collect()  # expect: TD710 (the loop below calls this every step)


def run_iterations(model, loader, opt, testing_iterations, save_steps):
    for it, batch in enumerate(loader):
        opt.zero_grad()
        model(batch).mean().backward()
        opt.step()
        report_on_test_iterations(it, testing_iterations)
        synchronize()
        barrier_on_save(it, save_steps)
        sweep_garbage()


def adapt_online(model, stream, opt, device, steps_per_batch):
    for x, y in stream:
        model.to(device)  # expect: TD713 (each item of the stream runs the inner steps)
        for _ in range(steps_per_batch):
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for epoch in range(10):
        model.to(device)  # near-miss: once an epoch, the inner loop walks the loader
        for x, y in stream:
            model(x).sum().backward()
            opt.step()
    for task in stream:
        model.to(device)  # near-miss: the inner loop only evaluates
        for _ in range(steps_per_batch):
            model(task)


def ppo(policy, vhead, prompts, sample, ppo_loss, device, n_rollouts, ppo_epochs):
    opt = torch.optim.Adam(policy.parameters())
    for it in range(n_rollouts):
        policy.to(device)  # expect: TD713 (each rollout's batch is stepped on ppo_epochs times)
        seq = sample(policy, prompts[it])
        with torch.no_grad():
            old_logp = policy(seq).log_softmax(-1)
        for _ in range(ppo_epochs):
            loss = ppo_loss(policy(seq), old_logp)
            opt.zero_grad()
            loss.backward()
            opt.step()
        policy.save_pretrained("ppo_out")  # expect: TD711 (every few optimizer steps)


def epochs_of_sampled_batches(model, sample_batch, opt, device, n_epochs, steps):
    for ep in range(n_epochs):
        model.to(device)  # near-miss: the inner loop draws a new batch at every step
        lr = 0.1 * 0.9**ep
        for _ in range(steps):
            x = next(sample_batch)
            loss = model(x).sum() * lr
            loss.backward()
            opt.step()
        model.save_pretrained("out")  # near-miss: once per epoch of `steps` fresh batches


def epochs_over_indices(model, data, opt, device, n_rounds, n_batches):
    for r in range(n_rounds):
        model.to(device)  # near-miss: the inner loop walks the batches by index
        for i in range(n_batches):
            loss = model(data[i]).sum()
            loss.backward()
            opt.step()


def selfplay_iterations(net, play, opt, n_iters, train_steps):
    for it in range(n_iters):
        buf = play(net)
        for step in range(train_steps):
            idx = torch.randint(len(buf), (256,))
            loss = net(buf[idx]).sum()
            loss.backward()
            opt.step()
        torch.save(net.state_dict(), "best.pt")  # near-miss: each step draws a new minibatch


def cleanrl_ppo(agent, envs, optimizer, device, n_iters, n_steps, update_epochs, batch, mb):
    for iteration in range(n_iters):
        with torch.no_grad():
            for step in range(n_steps):
                obs[step], rewards[step] = envs.step(agent(obs[step - 1]))
        b_obs = obs.reshape(batch, -1)
        agent.to(device)  # expect: TD713 (a permutation walks the same rollout batch)
        for epoch in range(update_epochs):
            b_inds = torch.randperm(batch)
            for start in range(0, batch, mb):
                loss = agent(b_obs[b_inds[start:start + mb]]).sum()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                optimizer.step()
        torch.save(agent.state_dict(), "ppo.pt")  # expect: TD711 (every few minibatch steps)
        if iteration % 50 == 0:
            torch.save(agent.state_dict(), f"ppo_{iteration}.pt")  # near-miss: every 50 rollouts


def proxy_training(model, opt, batches, n, test):
    """GFlowNet's proxy training: a snapshot of the best model kept on the host, and a move
    every 1000 steps."""
    best_loss = float("inf")
    for i in range(n):
        loss = model(batches[i]).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        best_model = copy.deepcopy(model)
        best_model.to("cpu")  # near-miss: a new copy made in the loop, kept on the host
        if not i % 1000:
            model.to("cuda")  # near-miss: every 1000 steps
        model.cuda()  # expect: TD713 (the trained model, every step)
