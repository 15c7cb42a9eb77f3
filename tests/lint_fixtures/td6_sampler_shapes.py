# Inference loops in the shapes real samplers and readers take: a timestep read at the loop's
# index, a function named `..._sampler`, an encoder a getter returns, a model named `reader`.
import numpy as np
import torch


def euler_maruyama_sampler(model, sde, shape, labels, device, num_steps=1000, eps=1e-3):
    x = sde.prior_sampling(shape, device)
    timesteps = torch.linspace(sde.T, eps, num_steps, device=device)
    for i in range(num_steps):  # expect: TD602
        t = timesteps[i]
        vec_t = torch.ones(shape[0], device=device) * t
        cond = model.class_encoder(labels)  # expect: TD601
        x = x + model(x, vec_t, cond=cond)
    return x


@torch.no_grad()
def euler_sampler_cached(model, sde, shape, labels, device, num_steps=1000):
    x = sde.prior_sampling(shape, device)
    timesteps = torch.linspace(sde.T, 1e-3, num_steps, device=device)
    cond = model.class_encoder(labels)  # near-miss: encoded once
    for i in range(num_steps):
        t = timesteps[i]
        x = x + model(x, t.expand(shape[0]), cond=cond)
    return x


def build_sampler(dataset, weights):
    sampler = torch.utils.data.WeightedRandomSampler(weights, len(dataset))
    return sampler  # near-miss: a data sampler, no loop


@torch.no_grad()
def greedy_answer(reader, tok, src, max_new=32, device="cuda"):
    out = torch.full((1, 1), reader.config.decoder_start_token_id, device=device)
    for _ in range(max_new):
        enc = reader.get_encoder()(input_ids=src.input_ids, attention_mask=src.attention_mask)  # expect: TD601
        logits = reader(encoder_outputs=enc, decoder_input_ids=out).logits  # expect: TD604
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat((out, nxt), dim=1)
    return tok.decode(out[0])


@torch.no_grad()
def greedy_answer_cached(reader, src, max_new=32, device="cuda"):
    enc = reader.get_encoder()(input_ids=src.input_ids)  # near-miss: encoded once
    out = torch.full((1, 1), reader.config.decoder_start_token_id, device=device)
    past = None
    for _ in range(max_new):
        res = reader(encoder_outputs=enc, decoder_input_ids=out[:, -1:], past_key_values=past)  # near-miss: cached
        past = res.past_key_values
        out = torch.cat((out, res.logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return out


class VideoSampler:
    @torch.no_grad()
    def sample(self, text_ids, shape, steps=50, stride=20):
        x = torch.randn(shape, device=self.device)
        for i in reversed(range(steps)):
            t = i * stride
            ctx = self.text_encoder(text_ids).last_hidden_state  # expect: TD601
            blend = torch.tensor([0.7, 0.3], device=x.device)  # expect: TD511
            ts = torch.full((shape[0],), t, device=self.device, dtype=torch.long)
            x = blend[0] * x + blend[1] * self.model(x, ts, ctx)
        return x


@torch.no_grad()
def controlnet_sample(unet, text_encoder, scheduler, prompt_ids, uncond_ids, latents):
    for t in scheduler.timesteps:
        embeds = text_encoder(torch.cat([uncond_ids, prompt_ids]))[0]  # expect: TD601
        latent_in = torch.cat([latents] * 2)  # near-miss: the latents change every step
        latents = scheduler.step(unet(latent_in, t, encoder_hidden_states=embeds).sample, t, latents).prev_sample
    return latents


@torch.no_grad()
def caption_until_eos(model, image, bos, eos, max_len=40):
    ids = bos
    while ids.shape[1] < max_len:
        feats = model.vision_encoder(image)  # expect: TD601
        logits = model.decoder(ids[:, -1:], feats, use_cache=True)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


@torch.no_grad()
def caption_until_eos_cached(model, image, bos, max_len=40):
    feats = model.vision_encoder(image)  # near-miss: encoded once
    ids, done = bos, False
    while not done:
        nxt = model.decoder(ids[:, -1:], feats, use_cache=True)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        done = ids.shape[1] >= max_len
    return ids


@torch.no_grad()
def edm_sampler_keep_channel(denoiser, cond, cur, ice_mask, idx, sigmas):
    x = torch.randn_like(cur) * sigmas[0]
    for t in range(len(sigmas) - 1):
        x = x + (x - denoiser(x, sigmas[t], cond)) / sigmas[t] * (sigmas[t + 1] - sigmas[t])
        x[:, ice_mask, 5] = cur[:, ice_mask, 5]  # expect: TD603 (the mask is one part of the index)
        x[:, idx, 5] = cur[:, idx, 5]  # near-miss: integer indices, no mask
        x[..., 0] = cur[..., 0]  # near-miss: a slice and a channel number
    return x


@torch.no_grad()
def complete_pose(model, kp2d, x, num_steps=1000):
    for t in reversed(range(num_steps)):
        cond = model.cond_encoder(kp2d.flatten(1))  # expect: TD601 (a view of an invariant input)
        x = model(x, torch.full((x.shape[0],), t, device=x.device), cond)
    return x


@torch.no_grad()
def refine_pose(model, kp2d, x, num_steps=1000):
    for t in reversed(range(num_steps)):
        feat = model.pose_encoder(x.flatten(1))  # near-miss: the view of what the loop updates
        x = model(x, torch.full((x.shape[0],), t, device=x.device), feat + kp2d)
    return x


class MotionGPT(torch.nn.Module):
    def forward(self, idx, text_emb):
        return idx.float() + text_emb


@torch.no_grad()
def sample_codes(gpt, text_emb, max_codes=50):  # T2M-GPT's shape: the model is named `gpt`
    idx = torch.empty(len(text_emb), 0, dtype=torch.long)
    for _ in range(max_codes):
        logits = gpt(idx, text_emb)[:, -1]  # expect: TD604
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], 1)
    return idx


@torch.no_grad()
def grow_with_a_rule(rule, text_emb, max_codes=50):
    idx = torch.empty(len(text_emb), 0, dtype=torch.long)
    for _ in range(max_codes):
        nxt = rule(idx, text_emb)  # near-miss: a caller hands a plain function, no Module
        idx = torch.cat([idx, nxt], 1)
    return idx


def generate_motions(text_emb, device):
    gpt = MotionGPT().to(device).eval()
    codes = sample_codes(gpt, text_emb)
    return codes, grow_with_a_rule(lambda i, e: i[:, -1:], text_emb)


@torch.no_grad()
def inpaint_root(model, shape, root, steps=1000):  # MDM's shape: a mask made empty, then set
    x = torch.randn(shape)
    known = None
    if root is not None:
        known = torch.zeros(shape, dtype=torch.bool)
        known[..., :4] = True
    for t in reversed(range(steps)):
        x0 = model(x, t)
        if known is not None:
            x0[known] = root.reshape(-1)  # expect: TD603
        x = x0 + x
    return x


@torch.no_grad()
def write_rows(model, shape, rows, steps=1000):
    x = torch.randn(shape)
    picked = torch.zeros(len(rows), dtype=torch.long)
    for t in reversed(range(steps)):
        x0 = model(x, t)
        x0[picked] = rows  # near-miss: an integer index, no nonzero
        x = x0 + x
    return x


class PromptEncoder(torch.nn.Module):
    def forward(self, prompts):
        return torch.zeros(len(prompts), 77, 768)


@torch.no_grad()
def ddim_frames(net, ctx, known, known_mask, steps=50):  # a timestep grid bound to a name
    ts = torch.linspace(999, 0, steps).long()
    x = torch.randn(2, 4, 16, 32, 32)
    for i, t in enumerate(ts):
        tt = t.repeat(2)
        x0 = net(x, tt, ctx)
        x0[:, :, known_mask] = known[:, :, known_mask]  # expect: TD603
        x = x0 + x if i + 1 < steps else x0
    return x


@torch.no_grad()
def integrate_path(field, x, known, known_mask, steps=50):
    grid = torch.linspace(0, 1, steps)
    for i, s in enumerate(grid):
        v = field(x, s)
        v[known_mask] = known[known_mask]  # near-miss: no timestep variable, not a sampler
        x = x + v / (steps - i)
    return x


@torch.no_grad()
def sample_frames(model, known, known_mask, ts):  # a timestep read at the index, then repeated
    x = torch.randn(2, 4, 16, 32, 32)
    for i in range(len(ts)):
        t = ts[i]
        tt = t.repeat(2)
        x0 = model(x, tt)
        x0[:, :, known_mask] = known[:, :, known_mask]  # expect: TD603
        x = x0 + x
    return x


@torch.no_grad()
def refine_frames(model, known, known_mask, scales):
    x = torch.randn(2, 4, 16, 32, 32)
    for i in range(len(scales)):
        s = scales[i]
        ss = s.repeat(2)
        x0 = model(x, ss)
        x0[:, :, known_mask] = known[:, :, known_mask]  # near-miss: no timestep read, a loop over scales
        x = x0 + x
    return x


@torch.no_grad()
def ddim_text(unet, text, prompts, steps=50):  # `text` is a module every caller hands over
    x = torch.randn(len(prompts), 4, 16, 32, 32)
    for t in reversed(range(steps)):
        ctx = text(prompts)  # expect: TD601
        x = unet(x, t, ctx)
    return x


@torch.no_grad()
def ddim_lengths(unet, count, prompts, steps=50):
    x = torch.randn(len(prompts), 4, 16, 32, 32)
    for t in reversed(range(steps)):
        n = count(prompts)  # near-miss: a plain function every caller hands over
        x = unet(x, t, n)
    return x


def prompt_lengths(prompts):
    return [len(p) for p in prompts]


def make_videos(unet, prompts):
    text = PromptEncoder()
    return ddim_text(unet, text, prompts), ddim_lengths(unet, prompt_lengths, prompts)


@torch.no_grad()
def decode_around(gpt, scaffold_enc, reference, scaffold_ids, target_ids, ids, steps=64):
    for _ in range(steps):
        prefix = scaffold_enc(scaffold_ids) if scaffold_enc is not None else None  # expect: TD601
        bonus = reference(target_ids)  # near-miss: 'enc' inside a word, not an encoder's name
        nxt = (gpt(ids[:, -1:], prefix)[:, -1] + bonus).argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


@torch.no_grad()
def ddim_control(unet, hint, ctx, x, known, keep_mask, steps=50):  # LDM's numpy DDIM grid
    ts = np.linspace(999, 0, steps).astype(int)
    for i, t in enumerate(ts):
        hint_feat = unet.hint_enc(hint)  # expect: TD601
        eps = unet(x, torch.full((2,), int(t)), ctx, hint_feat)
        x = x - eps
        x[keep_mask] = known[keep_mask]  # expect: TD603
    return x


@torch.no_grad()
def smooth_path(field, x, known, keep_mask, steps=50):
    grid = np.linspace(0, 1, steps)
    for i, s in enumerate(grid):
        v = field(x, s)
        v[keep_mask] = known[keep_mask]  # near-miss: an ascending grid outside a sampler
        x = x + v / steps
    return x


@torch.no_grad()
def repaint(unet, ctx, x, known, keep, steps=50):
    for t in reversed(range(steps)):
        x = unet(x, t, ctx)
        x[keep] = known[keep]  # expect: TD603 (every caller hands `keep` a mask)
    return x


@torch.no_grad()
def fill_rows(unet, ctx, x, known, rows, steps=50):
    for t in reversed(range(steps)):
        x = unet(x, t, ctx)
        x[rows] = known[rows]  # near-miss: the caller hands integer rows, no mask
    return x


def run_repaint(unet, ctx, x, known, img):
    m = torch.from_numpy(img < 128)
    keep = m[None, None].expand_as(x).to(x.device)
    rows = torch.arange(4)
    return repaint(unet, ctx, x, known, keep=keep), fill_rows(unet, ctx, x, known, rows)


@torch.no_grad()
def inpaint_inverted(unet, ctx, x, init, latent_mask, sched):  # the mask's inverse as the index
    for t in sched.timesteps:
        x = sched.step(unet(x, t, ctx), t, x).prev_sample
        x[~latent_mask] = init[~latent_mask]  # expect: TD603
        x[idx + 1] = init[idx + 1]  # near-miss: integer indices shifted, no mask
    return x


@torch.no_grad()
def langevin_corrected(score, x, x0, sigmas, known_mask, n_steps_each=100):
    for t in range(len(sigmas) - 1, -1, -1):  # annealed Langevin: corrector steps per level
        level = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        for _ in range(n_steps_each):
            x = x + score(x, level) + torch.randn_like(x)
            x[known_mask] = x0[known_mask]  # expect: TD603
    return x


@torch.no_grad()
def nested_samplers(unet, ctx, x, init, known_mask, sched, num_inference_steps=4):
    for t in sched.timesteps:
        for j in range(num_inference_steps):  # a sampling loop in a sampling loop: told once
            x = unet(x, j, ctx)
            x[known_mask] = init[known_mask]  # expect: TD603
    return x
