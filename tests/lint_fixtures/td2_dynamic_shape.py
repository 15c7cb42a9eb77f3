# TD207: operations whose output size depends on tensor values, run every step.
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def train(model, loader, opt, device, n_samples):
    for step, (x, y, meta) in enumerate(loader):
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        out = model(x)
        err = (out - y) ** 2
        loss = err[y != -100].mean()  # expect: TD207
        keep = y >= 0
        loss = loss + F.cross_entropy(out[keep], y[keep])  # expect: TD207
        finite = out[torch.isfinite(out) & keep]  # expect: TD207
        rest = out[~keep]  # expect: TD207
        picked = out[:, out.sum(0).gt(0)]  # expect: TD207
        rows = torch.nonzero(keep)  # expect: TD207
        cols = keep.nonzero(as_tuple=True)  # expect: TD207
        where = torch.where(keep)  # expect: TD207
        sel = torch.masked_select(out, keep)  # expect: TD207
        classes = y.unique()  # expect: TD207
        runs = torch.unique_consecutive(y)  # expect: TD207
        counts = keep.sum(1)
        flat = out.repeat_interleave(counts, dim=0)  # expect: TD207
        ids = torch.repeat_interleave(counts)  # expect: TD207
        big = out[out > math.log(2)]  # expect: TD207
        lead = keep[0].nonzero()  # expect: TD207
        noise = torch.randn_like(out)
        noise[keep] = torch.randn_like(out)  # expect: TD207
        err[keep] += 1  # expect: TD207
        # near-misses: fixed-size forms, unknown indices, Python numbers
        masked = (err * keep).sum() / keep.sum().clamp(min=1)
        out[keep] = 0  # a Python number: runs as masked_fill_, no sync
        out[~keep] = -float("inf")
        out[keep] = model.fill_value  # unknown value: may be a number
        first = out[0] + out[:, 1:].sum() + out[step] + out[x.argmax()]
        chosen = out[torch.randperm(out.shape[0], device=device)]
        rev = out[~step]  # ~ on a Python int: a reverse index
        both = torch.where(keep, out, torch.zeros_like(out))
        flat = out.repeat_interleave(counts, dim=0, output_size=n_samples)
        twice = out.repeat_interleave(2, dim=0)
        many = out.repeat_interleave(n_samples, dim=0)  # unknown repeats: an int, most likely
        filled = out.masked_fill(~keep, 0.0)
        if step % 100 == 0:
            logged = out[keep].mean()  # logged every 100 steps
        tags = np.asarray(meta)
        hits = tags[tags > 0]  # NumPy data
        seen = np.unique(tags)
        (loss + masked + first.sum() + chosen.sum() + both.sum()).backward()
        opt.step()
    final = out[out > 0]  # after the loop: once
    return finite, rest, picked, rows, cols, where, sel, classes, runs, flat, ids, big, lead, final


def evaluate(model, loader):
    accs = []
    with torch.no_grad():
        for x, y in loader:
            pred = model(x)
            valid = y != -100
            accs.append((pred.argmax(-1)[valid] == y[valid]).float().mean())  # no backward
    return accs


class MaskedLoss(nn.Module):
    def __init__(self, ignore_index=-100):
        super().__init__()
        self.ignore_index = ignore_index
        self.lut = None

    def forward(self, logits, target, mask):
        valid = target != self.ignore_index
        loss = F.cross_entropy(logits[valid], target[valid])  # expect: TD207
        kept = logits[mask]  # expect: TD207 (an argument named as a mask: a boolean one)
        if not self.training:
            loss = loss + logits[valid].sum()  # evaluation only
        with torch.no_grad():
            hits = logits[valid].argmax(-1)  # bookkeeping outside autograd
        sizes = torch.tensor([t.shape[-1] for t in logits])  # built from Python ints: CPU
        crops = torch.unique_consecutive(sizes, return_counts=True)
        return loss, kept, hits, crops


class RoutedExperts(nn.Module):
    def __init__(self, experts):
        super().__init__()
        self.experts = nn.ModuleList(experts)

    def forward(self, x, route):
        y = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            y[route == i] = expert(x[route == i])  # expect: TD301 (a mask per value: TD301 only)
        y[route < 0] = x[route < 0]  # expect: TD207
        return y


class PostProcess(nn.Module):
    def forward(self, scores, boxes):
        keep = scores > 0.5
        return scores[keep], boxes[keep]  # post-processing: evaluation only


class Detector(nn.Module):
    @torch.no_grad()
    def forward(self, scores):
        return scores[scores > 0.5]  # inference-only module


class SurfaceExtractor(nn.Module):
    def forward(self, field):
        inside = field < 0
        return torch.unique(field[inside])  # only ever run under no_grad (below)


class Renderer(nn.Module):
    def __init__(self):
        super().__init__()
        self.extractor = SurfaceExtractor()

    @torch.no_grad()
    def render(self, field):
        return self.extractor(field)


class Lit(nn.Module):
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        return F.cross_entropy(logits[y != -1], y[y != -1])  # expect: TD207


def train_step(model, batch, opt, vocab_size, special_id):
    out = model(batch)
    labels = batch["labels"]
    loss = out[labels.ne(0)].mean()  # expect: TD207
    loss.backward()
    opt.step()
    frozen = torch.arange(vocab_size) != special_id  # a mask built on the CPU
    model.grad[frozen] = model.grad[frozen].fill_(0)
    others = torch.ones(vocab_size, dtype=torch.bool)  # on the CPU too (no device=)
    others[special_id] = False
    model.weight.data[others] = model.saved[others]
    table = batch["table"]
    kinds = table["kind"].unique()  # a table column (pandas)
    present = batch["labels"].unique()  # expect: TD207
    return kinds, present


def backend_step(nx, model, a, opt):
    loss = model(a).sum()
    loss.backward()
    opt.step()
    return nx.unique(a)  # a backend namespace's unique, not the tensor method


x = torch.randn(8)
positive = x[x > 0]  # module level: runs once


def dlrm_step(model, loader, opt, device):
    for dense, sparse, y in loader:
        dense = dense.cuda()
        ids = torch.tensor(sparse[:, 0].tolist(), device=device)  # expect: TD203
        hot = torch.unique(ids)  # expect: TD207 (made with device=: on the device)
        loss = model(dense, hot).sum()
        loss.backward()
        opt.step()


def silog_loss(pred, gt, valid):
    d = torch.log(pred[valid]) - torch.log(gt[valid])  # expect: TD207
    return (d ** 2).mean()


def gather_rows(feats, mask_idx):
    return feats[mask_idx]  # near-miss: named as indices


def depth_step(model, loader, opt):
    for img, depth in loader:
        img, depth = img.cuda(), depth.cuda()
        loss = silog_loss(model(img), depth, depth > 0.1) + gather_rows(img, depth.argmax(1)).sum()
        loss.backward()
        opt.step()


def vtrace_learner_step(model, batch, optimizer, stats):
    """IMPALA: `batch["done"]` is inverted into the discounts, so it holds booleans; indexing
    the returns by it every learner step waits for the count."""
    batch = {key: tensor.cuda() for key, tensor in batch.items()}
    out = model(batch)
    discounts = (~batch["done"]).float() * 0.99
    returns = batch["episode_return"][batch["done"]]  # expect: TD207
    levels = batch["episode_return"][batch["level"]]  # a key never inverted: an index
    loss = (out * discounts).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    stats["return"] = returns, levels


class Wav2Vec2Like(nn.Module):
    def forward(self, source, mask_indices, pad_idx):
        features = self.feature_extractor(source)
        unmasked = features.clone()
        x = torch.where(mask_indices.unsqueeze(-1), self.mask_emb, features)
        x = self.encoder(x)
        y = unmasked[mask_indices].view(unmasked.size(0), -1, unmasked.size(-1))  # expect: TD207
        kept = x[pad_idx]  # near-miss: indices of unknown kind, never a torch.where condition
        return self.loss(x, y, kept)


def ppo_epoch(policy, optimizer, minibatches):
    for mb in minibatches:
        q_len, resp_mask = mb["q_len"], mb["response_mask"]
        ratio = torch.exp(policy(mb["input_ids"]) - mb["old_logprobs"])
        pg_loss = (-mb["advantages"] * ratio)[resp_mask].mean()  # expect: TD207
        ids = mb["input_ids"][mb["row_ids"]]  # near-miss: a batch entry that names indices
        optimizer.zero_grad()
        (pg_loss + ids.float().mean()).backward()
        optimizer.step()


class MarginHead(nn.Module):
    @torch.no_grad()
    def pick_classes(self, labels):
        positive = torch.unique(labels, sorted=True)  # expect: TD207
        return positive, torch.searchsorted(positive, labels)

    def forward(self, embeddings, labels):
        index, labels = self.pick_classes(labels)
        return self.ce(embeddings @ self.weight[index].T, labels)


def train_iter(model, optimizer, criterion, x, target, mask_train):
    output = model(x)
    loss = criterion(output[mask_train], target[mask_train])  # near-miss: integer indices (see the caller)
    loss.backward()
    optimizer.step()


def run_gcn(model, optimizer, criterion, x, labels, epochs):
    idx = torch.randperm(len(labels)).cuda()
    idx_val, idx_train = idx[:500], idx[500:]
    for _ in range(epochs):
        train_iter(model, optimizer, criterion, x, labels, idx_train)


def matched_edge_loss(edge_logits, bonds, perm, node_mask):
    # a graph VAE's matching: the target indexed by a CPU arange stays on the device
    bonds_p = bonds[torch.arange(perm.shape[0])[:, None, None], perm[:, :, None], perm[:, None, :]]
    nll = F.cross_entropy(edge_logits, bonds_p, reduction="none")
    valid = nll[node_mask.bool()]  # expect: TD207
    rows = torch.arange(perm.shape[0])[node_mask.any(1)]  # near-miss: the CPU arange is indexed, on the host
    return valid.mean(), rows


def train_graph_vae(model, loader, opt):
    for x, bonds, perm, node_mask in loader:
        edge_logits = model(x.cuda())
        loss, _ = matched_edge_loss(edge_logits, bonds.cuda(), perm.cuda(), node_mask.cuda())
        loss.backward()
        opt.step()


def mask_tokens(tokens, special, p=0.15):
    selected = (torch.rand(tokens.shape, device=tokens.device) < p) & (tokens != special)
    order = torch.argsort(torch.rand(tokens.shape, device=tokens.device), dim=-1)
    return torch.where(selected, 4, tokens), selected, order


def train_mlm(model, loader, opt):
    for tokens, special in loader:
        tokens, special = tokens.cuda(), special.cuda()
        inp, selected, order = mask_tokens(tokens, special)
        logits = model(inp)
        loss = F.cross_entropy(logits[selected], tokens[selected])  # expect: TD207
        first = logits[order[:, :8]]  # near-miss: the helper's indices (argsort), not a mask
        loss = loss + first.mean()
        loss.backward()
        opt.step()


class ContrastiveTrainer:
    def __init__(self, model, opt, batch_size, device):
        self.model, self.opt, self.bs, self.device = model, opt, batch_size, device

    def info_nce_loss(self, features):
        labels = torch.cat([torch.arange(self.bs) for _ in range(2)], dim=0)
        labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
        labels = labels.to(self.device)  # (on the device from here on)
        sim = features @ features.T
        positives = sim[labels.bool()].view(labels.shape[0], -1)  # expect: TD207
        eye = torch.eye(labels.shape[0], dtype=torch.bool).to(self.device)  # expect: TD204
        off_diag = sim[~eye].view(labels.shape[0], -1)  # expect: TD207
        order = torch.arange(labels.shape[0]).to(self.device)  # expect: TD204
        rolled = sim[order.flip(0)]  # near-miss: indices moved to the device, not a mask
        weights = labels.bool().to(sim)
        scaled = sim[weights]  # near-miss: .to(a tensor) casts to its dtype (float), not a mask
        counts = torch.arange(self.bs).repeat(2)
        counts = counts.cpu()
        kept = counts[counts > 1]  # near-miss: the last assignment is a host copy
        return positives.sum() + kept.sum() + off_diag.sum() + rolled.sum() + scaled.sum()

    def train(self, loader):
        for images, _ in loader:
            loss = self.info_nce_loss(self.model(images.to(self.device)))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
