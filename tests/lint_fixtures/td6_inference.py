# TD601 / TD602 / TD603 / TD604 fixtures.
import numpy as np
import torch
from tqdm import tqdm


class Policy(torch.nn.Module):
    @torch.no_grad()
    def conditional_sample(self, x, vl_tokens, ego, scheduler):
        for t in scheduler.timesteps:
            memory = self.encoder(vl_tokens, ego)  # expect: TD601
            noise = self.decoder(x, t, memory)
            x = scheduler.step(noise, t, x).prev_sample
        return x

    @torch.inference_mode()
    def sample_fast(self, x, vl_tokens, ego, scheduler, num_inference_steps):
        memory = self.encoder(vl_tokens, ego)
        for i in range(num_inference_steps):
            t = scheduler.timesteps[i]
            cond = self.time_embed(t)
            x = scheduler.step(self.decoder(x, cond, memory), t, x).prev_sample
        return x


def evaluate(model, loader):
    total = 0.0
    for x, y in loader:  # expect: TD602
        total += (model(x).argmax(-1) == y).sum()
    return total


def run_inference(model, batches):
    model.eval()
    outs = []
    for b in batches:  # expect: TD602
        outs.append(model(b))
    return outs


def validate_ok(model, loader):
    model.eval()
    with torch.inference_mode():
        for x in loader:
            model(x)


@torch.no_grad()
def predict_ok(model, loader):
    return [model(x) for x in loader]


def train_epoch(model, loader, opt):
    model.train()
    for x in loader:
        loss = model(x).sum()
        loss.backward()
        opt.step()


def evaluate_structure(model):
    model.eval()
    names = []
    for name, module in model.named_modules():  # walks modules, never runs the model
        names.append(name)
        builder.add_module(name, module)
        reset_modules(module)
    return names


def train_steps(model, opt, num_steps, x):
    for _ in range(num_steps):  # a training loop, not a denoising loop
        reset_model(model)
        model(x).sum().backward()
        opt.step()


@torch.no_grad()
def sample_plain_range(model, cond, steps=50):
    x = torch.randn(4, 16)
    for t in reversed(range(steps)):
        emb = model.encode(cond)  # expect: TD601
        x = model.denoise(x, t, emb)
    return x


@torch.no_grad()
def sample2(model, obs, steps=100):
    x = torch.randn(4, 8)
    for i in reversed(range(steps)):  # a range walked backwards: i is the timestep
        emb = model.obs_encoder(obs)  # expect: TD601
        x = model.denoise(x, i, emb)
    for k in range(steps - 1, -1, -1):
        emb = model.obs_encoder(obs)  # expect: TD601
        x = model.denoise(x, k, emb)
    for i in range(steps):  # counting up with a plain index: not known to be a timestep
        emb = model.obs_encoder(obs)
        x = model.refine(x, i, emb)
    return x


@torch.no_grad()
def generate_images(unet, text_encoder, prompt, steps=30):
    x = torch.randn(1, 4, 8, 8)
    for t in range(steps):
        cond = text_encoder(prompt)  # expect: TD601
        x = unet(x, t, cond)
    return x


@torch.no_grad()
def sample_mc_dropout_ok(model, x, n=20):
    outs = []
    for t in range(n):  # the loop variable reaches no call: repetition on purpose
        outs.append(model(x))
    return torch.stack(outs)


def train_epochs_ok(model, data, epochs, opt):
    for t in range(epochs):  # not a sampling function
        loss = model(data)
        loss.backward()
        opt.step()


def generate_tokens(model, prompt_ids, steps):
    ids = prompt_ids
    for _ in range(steps):  # expect: TD602
        ids = torch.cat([ids, model(ids).argmax(-1, keepdim=True)], dim=-1)  # expect: TD604
    return ids


class Pipeline:
    @torch.no_grad()
    def __call__(self, prompt, latents, t_start):
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            emb = self.text_encoder(prompt)[0]  # expect: TD601
            latents = self.scheduler.step(self.unet(latents, t, emb), t, latents).prev_sample
        for t in self.scheduler.timesteps[t_start:]:  # img2img: a slice of the timesteps
            emb = self.text_encoder(prompt)[0]  # expect: TD601
            latents = self.scheduler.step(self.unet(latents, t, emb), t, latents).prev_sample
        return latents


def train_and_validate(model, train_loader, val_loader, opt, epochs):
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            model(x, y).backward()
            opt.step()
        model.eval()
        for x, y in val_loader:  # expect: TD602
            model(x, y)


def evaluate_no_grad_inside(model, loader):
    model.eval()
    outs = []
    for x in loader:  # no_grad around the model call, inside the loop: fine
        with torch.no_grad():
            outs.append(model(x))
    return outs


@torch.no_grad()
def conditional_sample(model, scheduler, trajectory, condition_data, condition_mask):
    for t in scheduler.timesteps:
        trajectory[condition_mask] = condition_data[condition_mask]  # expect: TD603
        trajectory[condition_mask & (trajectory < 0)] = 0.0  # near-miss: one value, masked_fill_
        trajectory[~condition_mask] = -float("inf")  # near-miss: one value, masked_fill_
        trajectory = scheduler.step(model(trajectory, t), t, trajectory).prev_sample
    trajectory[condition_mask] = condition_data[condition_mask]  # near-miss: once, after
    return trajectory


@torch.no_grad()
def conditional_sample_where(model, scheduler, trajectory, condition_data, condition_mask):
    for t in scheduler.timesteps:
        trajectory = torch.where(condition_mask, condition_data, trajectory)  # near-miss
        trajectory[:, 0] = condition_data[:, 0]  # near-miss: a slice, not a mask
        trajectory = scheduler.step(model(trajectory, t), t, trajectory).prev_sample
    return trajectory


@torch.no_grad()
def generate(self, idx, max_new_tokens, block_size):
    for _ in range(max_new_tokens):  # nanoGPT's generate: the whole sequence, every step
        idx_cond = idx if idx.size(1) <= block_size else idx[:, -block_size:]
        logits, _ = self(idx_cond)  # expect: TD604
        idx_next = torch.multinomial(torch.softmax(logits[:, -1, :], dim=-1), num_samples=1)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


@torch.no_grad()
def generate_cached(model, idx, steps):
    cache = None
    for _ in range(steps):
        logits, cache = model(idx[:, -1:], cache)  # near-miss: the new token and a cache
        idx = torch.cat((idx, logits[:, -1:].argmax(-1)), dim=1)
    return idx


@torch.no_grad()
def collect_outputs(model, loader):
    outs = torch.empty(0)
    for x in loader:
        outs = torch.cat([outs, model(x)])  # expect: TD306 (TD604 near-miss: unseen by model)
    return outs


@torch.no_grad()
def greedy_hf(model, input_ids, steps):
    for _ in range(steps):  # a Hugging Face model called by keyword, its cache ignored
        logits = model(input_ids=input_ids).logits  # expect: TD604
        input_ids = torch.cat([input_ids, logits[:, -1:].argmax(-1)], dim=-1)
    return input_ids


@torch.no_grad()
def greedy_hf_cached(model, input_ids, steps):
    past = None
    for _ in range(steps):
        out = model(input_ids=input_ids[:, -1:], past_key_values=past)  # near-miss: cache
        past = out.past_key_values
        input_ids = torch.cat([input_ids, out.logits[:, -1:].argmax(-1)], dim=-1)
    return input_ids



class UNet1D(torch.nn.Module):
    def forward(self, x, cond):
        h = []
        for down in self.downs:
            x = down(x, cond)
            h.append(x)
        for up in self.ups:
            x = torch.cat((x, h.pop()), dim=1)  # a skip connection, not a growing sequence
            x = up(x, cond)
        return x


def ddpm(model, cond, T=100):
    x = torch.randn(1, 3, 8, 8)
    for t in range(T - 1, -1, -1):  # the timesteps walked backwards, whatever the function
        c = model.cond_proj(cond)  # expect: TD601
        x = model(x, torch.full((1,), t), c)
    return x


def evaluate_policy(model, env, episodes):
    obs = env.reset()
    for _ in range(episodes):  # a library's predict (stable-baselines3): autograd off inside
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, done, info = env.step(action)


class CountdownPlanner:
    def conditional_sample(self, tokens, ego, steps):
        traj = torch.randn(ego.shape[0], 8, 2)
        t = steps - 1
        while t >= 0:  # expect: TD602
            memory = self.encoder(tokens, ego)  # expect: TD601
            traj = self.decoder(traj, memory, t)
            t -= 1
        return traj

    def retry(self, x, tries):
        while tries > 0:  # near-miss: a retry counter, no timestep
            out = self.encoder(x)
            tries -= 1
        return out


def smart_inference_mode():
    def decorate(fn):
        return torch.inference_mode()(fn)

    return decorate


class Validator:
    @smart_inference_mode()
    def __call__(self, model, loader):
        model.eval()
        for batch in loader:  # the project's own decorator turns autograd off: no finding
            model(batch)


@torch.no_grad()
def greedy_translate(model, src, max_len, bos):
    memory = model.encode(src)
    ys = torch.full((src.size(0), 1), bos, dtype=torch.long)
    for _ in range(max_len - 1):
        out = model.decode(ys, memory)  # expect: TD604
        ys = torch.cat([ys, out[:, -1:].argmax(-1)], dim=1)
    return ys


@torch.no_grad()
def ddim_loop(unet, text_encoder, x, prompt_ids, steps):
    for t in torch.linspace(999, 0, steps).long():
        emb = text_encoder(prompt_ids)  # expect: TD601
        x = x - 0.02 * unet(x, t, emb)
    return x


@torch.no_grad()
def greedy_decode(model, src, src_mask, max_len, bos):  # the encoder re-run per token
    ys = torch.full((src.size(0), 1), bos, dtype=torch.long)
    for _ in range(max_len - 1):
        memory = model.encode(src, src_mask)  # expect: TD601
        out = model.decode(ys, memory)  # expect: TD604
        ys = torch.cat([ys, out[:, -1:].argmax(-1)], dim=1)
    return ys


@torch.no_grad()
def caption(model, image, bos, eos, max_len=20):
    tokens = [bos]
    for _ in range(max_len):
        feats = model.vision_encoder(image)  # expect: TD601
        logits = model.text_decoder(torch.tensor([tokens]), feats)
        tokens.append(int(logits[0, -1].argmax()))
    return tokens


@torch.no_grad()
def caption_many(model, images, bos):
    captions = []
    for image in images:  # near-miss: a new image each iteration, collected (no decoding)
        feats = model.vision_encoder(image)
        captions.append(model.text_decoder(torch.tensor([[bos]]), feats))
    return captions


@torch.no_grad()
def decode_with_cache(model, prompt, steps, embed_scale):
    cache, tokens = None, [prompt]
    for _ in range(steps):  # near-miss: the projection reads the growing tokens
        h = model.project(tokens[-1], embed_scale)
        logits, cache = model(h, cache)
        tokens.append(logits.argmax(-1))
    return tokens


class Planner(torch.nn.Module):
    @torch.no_grad()
    def conditional_sample(self, vl_tokens, ego_status, steps):
        traj = torch.randn(ego_status.shape[0], 8, 2)
        for t in reversed(range(steps)):
            memory = self.encoder(vl_tokens, self.ego_mlp(ego_status))  # expect: TD601 (once: the outer call, the inner one with it)
            eps = self.head(self.decoder(traj, t, memory))  # near-miss: traj changes every step
            traj = traj - eps / steps
        return traj


def evaluate_comprehension(model, loader, device):
    model.eval()
    preds = [model(b["input_ids"].to(device)).logits.argmax(-1) for b in loader]  # expect: TD602 (a loop as a comprehension)
    heads = [head(preds[0]) for head in model.heads]  # near-miss: a loop over the model's heads
    return torch.cat(preds), heads


@torch.no_grad()
def repaint(unet, scheduler, image, keep_mask, known):
    keep = keep_mask.bool().expand_as(image)  # (a mask, whatever its name)
    latents = torch.randn_like(image)
    for t in scheduler.timesteps:
        latents[keep] = known[keep]  # expect: TD603
        latents = scheduler.step(unet(latents, t).sample, t, latents).prev_sample
    return latents


def transcribe_all(model, loader):
    model.eval()
    texts = []
    for mel, _ in loader:  # expect: TD602 (a submodule of the model called: model.encoder)
        audio = model.encoder(mel)
        texts.append(audio.argmax(-1))
    for mel, _ in loader:  # near-miss: a method acting on the model, not running it
        model.get_encoder()
    return texts


class Generator:
    def _sample(self, ids, steps):  # near-miss: a private helper its public generate() wraps
        for _ in range(steps):
            h = self.model.semantic_encoder(ids)  # expect: TD604
            ids = torch.cat([ids, h.argmax(-1)[:, -1:]], dim=-1)
        return ids


def clip_zero_shot(model, loader, text_tokens):
    model.eval()
    for images, labels in loader:  # expect: TD602 (CLIP's API: model.encode_image / encode_text)
        image_features = model.encode_image(images)
        text_features = model.encode_text(text_tokens)
        labels.append((image_features @ text_features.T).argmax(-1))


@torch.no_grad()
def sample_with_inpainting(unet, scheduler, latents, init_latents=None, init_mask=None):
    for i, t in enumerate(scheduler.timesteps):
        latents = scheduler.step(unet(latents, t).sample, t, latents).prev_sample
        if init_mask is not None:
            latents[init_mask] = init_latents[init_mask]  # expect: TD603 (a branch every step takes)
        if i % 10 == 0:
            latents[init_mask] = init_latents[init_mask]  # near-miss: every tenth step
    return latents


def draft_tokens(draft, x, gamma):
    for _ in range(gamma):
        logits = draft(x).logits[:, -1]  # expect: TD604 (a speculative decoder's draft model)
        x = torch.cat([x, logits.argmax(-1, keepdim=True)], dim=1)
    return x


@torch.no_grad()
def caption_beam_search(model, image, seqs, scores, beam, max_len):
    for _ in range(max_len):
        feats = model.encoder(image).expand(beam, -1, -1)  # expect: TD601 (beams reordered)
        logits = model.decoder(seqs, feats)[:, -1]  # expect: TD604 (the beams' whole prefixes)
        scores, idx = (scores[:, None] + logits.log_softmax(-1)).flatten().topk(beam)
        prev, word = idx // logits.size(-1), idx % logits.size(-1)
        seqs = torch.cat([seqs[prev], word[:, None]], dim=1)
    return seqs


@torch.no_grad()
def windowed(model, ids, block):
    for _ in range(4):
        nxt = model(ids[:, -block:]).argmax(-1)
        ids = torch.cat([ids[:, -block:], nxt], dim=1)  # near-miss: a window kept, not grown
    return ids


@torch.no_grad()
def inpaint(unet, scheduler, init, mask, emb, device):
    keep = torch.nn.functional.interpolate(mask[None].float(), size=init.shape[-2:])[0].bool().to(device)
    keep = keep.expand_as(init)
    latents = torch.randn_like(init)
    for t in scheduler.timesteps:
        noised = scheduler.add_noise(init, torch.randn_like(init), t.reshape(1))
        latents[keep] = noised[keep]  # expect: TD603
        latents = scheduler.step(unet(latents, t, emb).sample, t, latents).prev_sample
    return latents


@torch.no_grad()
def sample_inpaint(mae, refiner, imgs, known, ids_keep, ids_restore, steps=8):
    target = mae.patchify(imgs)
    patches = torch.where(known[..., None], target, torch.randn_like(target))
    for t in reversed(range(steps)):
        latent, _, _ = mae.forward_encoder(imgs, ids_keep)  # expect: TD601
        ctx = mae.forward_decoder(latent, ids_restore)  # expect: TD601
        pred = refiner(patches, ctx, t)
        patches = patches + (pred - patches) / (t + 1)
        patches[known] = target[known]  # expect: TD603
    return patches


@torch.no_grad()
def sample_refined(mae, refiner, imgs, ids_keep, steps=8):
    x = torch.randn_like(imgs)
    for t in reversed(range(steps)):
        latent = mae.forward_encoder(x, ids_keep)  # near-miss: encodes the current sample
        x = refiner(x, mae.forward_decoder(latent, ids_keep), t)  # near-miss: latent changes
        rows = ids_keep[latent.argmax(-1)]
        x[rows] = imgs[rows]  # near-miss: integer rows, no mask
    return x


def ppo_update(policy, optimizer, batch, epochs):
    for _ in range(epochs):
        for mb in batch.split(8):
            loss = policy(mb).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def rlhf_loop(policy, ref_model, prompts, iterations):
    ref_model.eval()
    optimizer = torch.optim.Adam(policy.parameters())
    for it in range(iterations):  # near-miss: it trains, through ppo_update's own loops
        batch = ref_model(prompts[it])
        ppo_update(policy, optimizer, batch, 4)


class DDIMSampler:
    @torch.no_grad()
    def sample(self, cond_ids, uncond_ids, shape, keep_mask, known):
        c = self.text_encoder(cond_ids)[0]
        img = torch.randn(shape, device=self.device)
        time_range = np.flip(self.ddim_timesteps)
        iterator = tqdm(time_range, total=len(time_range))
        for i, step in enumerate(iterator):
            uc = self.text_encoder(uncond_ids)[0]  # expect: TD601
            ts = torch.full((shape[0],), step, device=self.device, dtype=torch.long)
            img[keep_mask] = known[keep_mask]  # expect: TD603
            img = self.p_sample_ddim(img, c, uc, ts, i)
        return img


@torch.no_grad()
def greedy_summarize(model, enc_out, attention_mask, start_id, max_new_tokens):
    dec_ids = torch.full((enc_out.shape[0], 1), start_id, device=enc_out.device)
    for _ in range(max_new_tokens):
        out = model(encoder_outputs=enc_out, attention_mask=attention_mask, decoder_input_ids=dec_ids, use_cache=False)  # expect: TD604
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        dec_ids = torch.cat([dec_ids, nxt], dim=1)
    return dec_ids


def anomaly_scores(test_set, device):
    model = PatchCoreLike(num_neighbors=9).to(device).eval()
    scores = []
    for x, label in torch.utils.data.DataLoader(test_set, batch_size=1):  # expect: TD602, TD401
        score, amap = model(x.to(device))
        scores.append(score)
    return scores


@torch.no_grad()
def generate_full_context(model, prompt, n_target, tgt_len):
    seq = prompt[:, None]
    for _ in range(n_target):
        logits, _ = model.step(seq[-tgt_len:])  # expect: TD604
        nxt = logits[-1, 0].argmax()
        seq = torch.cat([seq, nxt.view(1, 1)], dim=0)
    return seq[:, 0]


@torch.no_grad()
def generate_recurrent_step(model, ids, states, max_new):
    nxt = ids[:, -1:]
    for _ in range(max_new):
        logits, states = model.step(nxt, states)  # near-miss: one token and the carried state
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def recursive_forecast(model, x_enc, x_dec, label_len, steps):
    dec_in = x_dec[:, :label_len]
    enc_out = model.encoder(x_enc)
    with torch.no_grad():
        for t in range(steps):
            y = model.dec_emb(dec_in)  # expect: TD604
            for layer in model.dec_layers:
                y = layer(y, enc_out)
            if model.stop_check(dec_in):  # near-miss: a helper method, no layer of the model
                break
            dec_in = torch.cat([dec_in, model.proj(y[:, -1:])], dim=1)  # near-miss: the newest only
