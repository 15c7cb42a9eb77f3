# A host copy or read in every step of a sampling loop: NCSN's annealed Langevin keeps each
# corrector step's sample with images.append(x.to('cpu')) (1,000 syncs a call), a diffusers
# loop its frames with .cpu(). Under an `if` (every N steps), after the loop, on a NumPy
# array, or in a training loop: silent.
import numpy as np
import torch


@torch.no_grad()
def sample_langevin(x_mod, scorenet, sigmas, n_steps_each=100, step_lr=2e-5):
    images = []
    for c in reversed(range(len(sigmas))):
        labels = torch.full((x_mod.shape[0],), c, device=x_mod.device)
        step_size = step_lr * (sigmas[c] / sigmas[-1]) ** 2
        for _s in range(n_steps_each):  # (the corrector steps: every one of them)
            images.append(torch.clamp(x_mod, 0.0, 1.0).to('cpu'))  # expect: TD606
            noise = torch.randn_like(x_mod) * np.sqrt(step_size * 2)
            x_mod = x_mod + step_size * scorenet(x_mod, labels) + noise
    return images


@torch.no_grad()
def ddpm_sample(unet, scheduler, x, every=50):
    frames, norms = [], []
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(unet(x, t).sample, t, x).prev_sample
        norms.append(x.norm().item())  # expect: TD606
        if i % every == 0:
            frames.append(x.cpu())  # near-miss: every 50 steps
        grid = np.linspace(0, 1, 8)
        ticks = grid.tolist()  # near-miss: a NumPy array's list
    return x.cpu(), frames, norms, ticks  # near-miss: once, after the loop


def train(unet, scheduler, loader, opt):
    for x in loader:
        for t in reversed(range(scheduler.config.num_train_timesteps)):
            loss = unet(x, t).sample.pow(2).mean()
            loss.backward()
            opt.step()


def check_harmonics(sph, theta, phi, reference):
    worst = 0.0
    for deg in range(10):
        for m in range(deg, -deg - 1, -1):  # (a range walked backwards: no sample carried along)
            y = sph.get_element(deg, m, theta, phi)
            error = np.mean(np.abs(y.cpu().numpy() - reference(deg, m)))  # near-miss: compares, no sampler
            worst = max(worst, error)
    return worst


@torch.no_grad()
def anneal_Langevin_dynamics(x_mod, scorenet, sigmas, n_steps_each=100, step_lr=2e-5):
    """NCSN's own order: the noise levels walked forwards, the sample carried through `grad`."""
    images = []
    for c, sigma in enumerate(sigmas):
        labels = torch.ones(x_mod.shape[0], device=x_mod.device) * c
        step_size = step_lr * (sigma / sigmas[-1]) ** 2
        for _s in range(n_steps_each):
            images.append(torch.clamp(x_mod, 0.0, 1.0).to('cpu'))  # expect: TD606
            noise = torch.randn_like(x_mod) * np.sqrt(step_size * 2)
            grad = scorenet(x_mod, labels)
            x_mod = x_mod + step_size * grad + noise
    return images


@torch.no_grad()
def predict_mc_dropout(model, x, passes=20):
    outs = []
    for _ in range(passes):
        outs.append(model(x).cpu())  # near-miss: no sample carried from pass to pass
    return torch.stack(outs)


@torch.no_grad()
def inference(generator, files, load_wav, write):
    """HiFi-GAN's inference.py: one file per iteration, rebound from the file each time."""
    for _i, name in enumerate(files):
        wav = load_wav(name)
        wav = torch.FloatTensor(wav).cuda()
        audio = generator(wav.unsqueeze(0)).squeeze()
        write(name, audio.cpu().numpy())  # near-miss: nothing carried from file to file


def sample_images(generator, val_batch, latent_dim):
    """PyTorch-GAN's bicyclegan: a grid of samples accumulated with torch.cat, one per image."""
    grid = None
    for img_a in val_batch:
        z = torch.randn(latent_dim, latent_dim)
        fake = torch.cat(list(generator(img_a.repeat(latent_dim, 1, 1, 1), z).data.cpu()), -1)  # near-miss: no sample carried
        grid = fake if grid is None else torch.cat((grid, fake), -2)  # expect: TD306
    return grid


@torch.no_grad()
def sample_molecule(model, mdp, max_blocks, min_blocks):
    """GFlowNet's molecule sampler: the sampled action picks the block the host adds, and the
    stop action ends the loop; the host needs each one."""
    m = mdp.empty()
    for t in range(max_blocks):
        s_o, m_o = model(mdp.mols2batch([mdp.mol2repr(m)]))
        cat = torch.distributions.Categorical(logits=torch.cat([m_o.reshape(-1), s_o.reshape(-1)]))
        action = cat.sample().item()  # near-miss: tested for the stop action, then used on the host
        if action == 0 and t >= 1:
            break
        m = mdp.add_block_to(m, action - 1)
    return m


@torch.no_grad()
def sample_chain(model, x, n_steps):
    energies = []
    for t in range(n_steps):
        x = x + 0.01 * model(x)
        energies.append(x.pow(2).sum().item())  # expect: TD606 (kept, no decision on it)
    return x, energies
