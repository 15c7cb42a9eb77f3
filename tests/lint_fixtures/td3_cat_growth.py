# TD306 fixtures: a tensor grown in a loop by concatenating onto itself.
import torch
from torch import cat


def collect(model, loader):
    out = None
    for x in loader:
        y = model(x)
        out = y if out is None else torch.cat([out, y], 0)  # expect: TD306
    return out


def collect_tuple(model, loader):
    out = torch.empty(0, 10)
    for x in loader:
        out = torch.cat((out, model(x)))  # expect: TD306
    return out


def collect_branch(model, loader):
    feats = None
    for x in loader:
        if feats is None:
            feats = model(x)
        else:
            feats = cat([feats, model(x)], dim=0)  # expect: TD306
    return feats


def stack_rows(rows, n):
    acc = torch.zeros(0, 3)
    while acc.shape[0] < n:
        acc = torch.vstack([acc, rows()])  # expect: TD306
    return acc


def prepend(steps, make):
    hist = torch.empty(0)
    for _ in range(steps):
        hist = torch.cat([make(), hist])  # expect: TD306
    return hist


# ---- near misses: these lines stay silent ----------------------------------------------------
def with_list(model, loader):
    parts = []
    for x in loader:
        parts.append(model(x))
    return torch.cat(parts)  # once, after the loop


def decode(model, idx, steps):
    for _ in range(steps):
        logits = model(idx)  # expect: TD604
        idx = torch.cat([idx, logits[:, -1:].argmax(-1)], dim=1)  # read by the model: TD604's
    return idx


def running_window(x, steps, f):
    buf = torch.zeros(0)
    for _ in range(steps):
        buf = torch.cat([buf, f(x)])[-10:]  # the sliced result is kept, not the growth alone
        x = buf.mean()
    return buf


def read_each_time(loader, score):
    seen = torch.empty(0)
    for x in loader:
        s = score(x, seen)
        seen = torch.cat([seen, s])  # the loop reads what it grew
    return seen


def reset_every_batch(model, loader, layers):
    for x in loader:
        feats = model(x)
        for layer in layers:
            feats = layer(feats)
        both = torch.cat([feats, x], 1)  # not onto itself
    return both


def concat_once(a, b):
    out = torch.cat([a, b])  # not in a loop
    return out


def new_each_iteration(loader, f):
    for x in loader:
        out = f(x)
        out = torch.cat([out, out.flip(0)])  # made this iteration: no growth across iterations
    return out


def conditioning(self, emb, make):
    for kind in self.config.conditioning_types:
        emb = torch.cat([emb, make(kind)], dim=1)  # a loop over a few configured kinds
    return emb


@torch.no_grad()
def greedy_generate(model, input_ids, max_new_tokens):
    past_key_values, cur = None, input_ids
    for _ in range(max_new_tokens):
        out = model(input_ids=cur, past_key_values=past_key_values, use_cache=True)
        past_key_values = out.past_key_values
        cur = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        input_ids = torch.cat([input_ids, cur], dim=-1)  # near-miss: the ids of a cached decoder
    return input_ids


class EarlyFusionStem(torch.nn.Module):
    MODALITIES = ("rgb", "depth", "normal")

    def forward(self, batch):
        x = batch["rgb"]
        for name in self.MODALITIES[1:]:
            x = torch.cat([x, batch[name]], dim=1)  # near-miss: two constants' worth of iterations
        for name in ("depth", "normal"):
            x = torch.cat([x, batch[name]], dim=1)  # near-miss: a literal of two
        return self.conv(x)


def replay_window(play, games, window):
    states = torch.empty(0, 3, 6, 7)
    for _ in range(games):
        states = torch.cat([states, play()])[-window:]  # expect: TD306 (a window: copied whole)
    return states


def last_rows(rows, window):
    kept = torch.cat([r for r in rows])[-window:]  # near-miss: not grown onto itself
    return kept


@torch.no_grad()
def generate_recurrent(model, ids, max_new):
    states = model.init_states(ids.shape[0])
    logits, states = model.step(ids, states)
    for i in range(max_new):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)  # near-miss: one token a step beside a recurrent state
        logits, states = model.step(nxt, states)
    return ids


def rnn_outputs(cell, xs, h):
    out = xs.new_zeros(0, h.shape[-1])
    for x in xs:
        h = cell(x, h)
        out = torch.cat([out, h])  # expect: TD306
    return out


def replay_window_sampled(net, opt, games, n):
    buf = torch.empty(0, 4)
    for it in range(100):
        buf = torch.cat([buf, games(it)])[-n:]  # expect: TD306
        for _ in range(10):
            idx = torch.randint(len(buf), (32,))
            net(buf[idx]).sum().backward()
            opt.step()


def decode_sliding_context(model, ids, ctx):
    for _ in range(50):
        logits = model(ids[:, -ctx:])
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)[:, -ctx:]
    return ids


def decode_sliding_context_fed_back(model, ids, ctx):
    for _ in range(50):
        nxt = model(ids)[:, -1:].argmax(-1)
        ids = torch.cat([ids, nxt], 1)[:, -ctx:]
    return ids


@torch.no_grad()
def generate_positional_cache(model, idx, max_new_tokens):
    past, x = None, idx
    for _ in range(max_new_tokens):
        logits, _, past = model(x, past)
        idx_next = torch.multinomial(logits[:, -1].softmax(-1), num_samples=1)
        idx = torch.cat((idx, idx_next), dim=1)  # near-miss: the cache goes in positionally
        x = idx_next
    return idx


def fps_one_cloud(pts, npoint):
    chosen = torch.randint(0, pts.shape[0], (1,))
    distance = torch.full((pts.shape[0],), 1e10)
    for _ in range(npoint - 1):
        distance = torch.minimum(distance, ((pts - pts[chosen[-1]]) ** 2).sum(-1))
        chosen = torch.cat([chosen, distance.argmax().view(1)])  # expect: TD306


def greedy_rnn_decode(decoder, ids, h, n):
    for _ in range(n):
        logits, h = decoder(ids[:, -1:], h)
        ids = torch.cat([ids, logits.argmax(-1)], dim=1)  # near-miss: token ids, fed to the decoder
    return ids


def greedy_rnn_decode_named(decoder, ids, h, n):
    for _ in range(n):
        step_in = ids[:, -1:]
        logits, h = decoder(step_in, h)
        ids = torch.cat([ids, logits.argmax(-1)], dim=1)  # near-miss: the newest id, named, fed to the decoder
    return ids


def fps_named_newest(pts, npoint):
    chosen = torch.randint(0, pts.shape[0], (1,))
    distance = torch.full((pts.shape[0],), 1e10)
    for _ in range(npoint - 1):
        newest = chosen[-1]
        distance = torch.minimum(distance, ((pts - pts[newest]) ** 2).sum(-1))
        chosen = torch.cat([chosen, distance.argmax().view(1)])  # expect: TD306
    return chosen
