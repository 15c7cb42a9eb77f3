"""TD205 host reads inside forward; TD201 one call deep (a metric logger's update)."""

import numpy as np
import torch
import torch.nn as nn


class SetCriterion(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = weight
        self.scale = float(weight)  # near-miss: __init__ runs once

    def forward(self, outputs, targets, num_boxes):
        num_boxes = torch.clamp(num_boxes, min=1).item()  # expect: TD205
        loss = (outputs - targets).abs().sum() / num_boxes
        if torch.isnan(loss):  # expect: TD205
            raise FloatingPointError("nan loss")
        n = torch.clamp(num_boxes, min=1)  # near-miss: stays a tensor
        return loss / n

    def extra_repr(self):
        return f"weight={self.weight.item()}"  # near-miss: not forward


class Encoder(nn.Module):
    def forward(self, x, lengths):
        sizes = lengths.tolist()  # expect: TD205
        if self.training and x.size(0) > 1:  # near-miss: Python ints
            x = x * 2
        return x.split(sizes), self.cpu  # near-miss: an attribute, not a call


class MetricLogger:
    def __init__(self):
        self.meters = {}

    def update(self, **kwargs):
        for k, v in kwargs.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            self.meters[k] = v


class Plain:
    def update(self, **kwargs):
        self.last = kwargs


def train_one_epoch(model, criterion, loader, optimizer):
    metric_logger = MetricLogger()
    plain = Plain()
    for x, y in loader:
        loss_dict = criterion(model(x), y)
        losses = sum(loss_dict.values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        metric_logger.update(loss=losses, **loss_dict)  # expect: TD201
        plain.update(loss=losses)  # near-miss: its update reads nothing


class Gate(nn.Module):
    def forward(self, x, mask, scale: float = 1.0):
        if x.abs().max() > 1e4:  # expect: TD205
            x = x.clamp(-1e4, 1e4)
        if mask.any():  # expect: TD205
            x = x * mask
        if scale > 1.0 and x.dim() == 3:  # near-miss: Python numbers
            x = x * scale
        return x


class ClampedGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        scores = self.fc(x)
        if scores.max() > 10:  # expect: TD205 (a submodule's output, reduced and tested)
            scores = scores / 10
        return scores


class KeypointHead(nn.Module):
    def __init__(self, c, n_kp, thr=0.1):
        super().__init__()
        self.conv = nn.Conv2d(c, n_kp, 1)
        self.thr = thr

    def forward(self, feats):
        heat = self.conv(feats).sigmoid()
        if (heat > self.thr).any():  # expect: TD205 (heat: a sigmoid of a conv, then masked)
            heat = heat * (heat > self.thr)
        scale = self.thr * 2
        if scale > 1:  # near-miss: a Python number
            scale = scale * 0.5
        return heat * scale


class DepthDecoder(nn.Module):  # transformers' MoshiDepthDecoder
    def forward(self, input_ids, codebook_idx):
        embeds = []
        for position_idx in codebook_idx:
            position_idx = position_idx.item()  # expect: TD205 (the loop's tensor, read back)
            embeds.append(self.embed(input_ids[:, [position_idx]]))
        return torch.cat(embeds, 1)


class CheckedConv(torch.nn.Module):
    def forward(self, x, edge_index):
        if (edge_index >= x.size(0)).any():  # expect: TD205 (a forward input compared)
            raise IndexError("edge_index refers to a node that does not exist")
        return x


class AffineCoupling(nn.Module):  # RealNVP: a clamp decided on the host every call
    def forward(self, x, m):
        s, t = self.st(x * m)
        s, t = self.scale * s * (1 - m), t * (1 - m)
        if (s.abs() > 10).any():  # expect: TD205 (s: a submodule's output, unpacked)
            s = s.clamp(-10, 10)
        return x * torch.exp(s) + t


class DetectorHead(nn.Module):  # forward -> self.get_losses -> a host read every call
    def forward(self, feats, labels=None):
        out = self.conv(feats)
        if labels is None:
            return self.inference(out)
        return self.get_losses(out, labels)

    def get_losses(self, out, labels):
        num_fg = max(int((labels > 0).sum()), 1)  # expect: TD205 (get_losses runs every call)
        name = "focal"
        assert out.dim() == 4, f"bad {name} loss input {out}"  # near-miss: formatted on failure only
        return out.sum() / num_fg

    def inference(self, out):
        return out.sigmoid().cpu()  # near-miss: run for outputs, not every training call


class OptionalPaddingMask(nn.Module):
    """fair-esm: the padding mask is dropped when nothing is padded; testing for that reads the
    tensor's truth value on every forward."""

    def forward(self, tokens):
        padding_mask = tokens.eq(self.padding_idx)
        x = self.embed_tokens(tokens)
        if not padding_mask.any():  # expect: TD205
            padding_mask = None
        return x, padding_mask


class TacotronEncoder(nn.Module):
    def forward(self, x, input_lengths):
        x = self.convs(x).transpose(1, 2)
        input_lengths = input_lengths.cpu().numpy()  # expect: TD205
        x = nn.utils.rnn.pack_padded_sequence(x, input_lengths, batch_first=True)
        outputs, _ = self.lstm(x)
        return nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True)[0]


class Scorer(nn.Module):
    def forward(self, x):
        scores = self.head(x)
        return scipy_rank(scores.detach().cpu().numpy())  # near-miss: exported to a host library


class SVDHead(nn.Module):
    def forward(self, src, H):
        R = []
        for i in range(src.size(0)):
            u, s, v = torch.svd(H[i])  # expect: TD103
            r = v @ u.T
            r_det = torch.det(r)
            if r_det < 0:  # expect: TD205
                r = (v @ self.reflect) @ u.T
            R.append(r)
        return torch.stack(R)


class LinearChainCRF(nn.Module):
    def forward(self, emissions, tags, mask=None):
        if mask is None:
            mask = torch.ones_like(tags, dtype=torch.uint8)
        if not mask[0].all():  # expect: TD205
            raise ValueError("mask of the first timestep must all be on")
        return self._score(emissions, tags, mask.bool())


class FocalLoss(nn.Module):
    def forward(self, classifications, annotations):
        positive = torch.ge(annotations[:, 0], 0.5)
        if positive.sum() > 0:  # expect: TD205
            return classifications[positive].mean()
        return classifications.sum() * 0


def compute_mask_indices(shape, mask_length):
    idxs = np.random.randint(0, shape[1], (shape[0], mask_length))
    if idxs.max() > shape[1] - 1:  # near-miss: NumPy arrays
        idxs[idxs > shape[1] - 1] = shape[1] - 1
    return idxs


class OffsetDecoder(nn.Module):
    def __init__(self, d, n):
        super().__init__()
        self.head = nn.Linear(d, n * 3)
        self.n = n

    def forward(self, feats):
        offsets = self.head(feats).view(-1, self.n, 3)
        if self.training and offsets.norm(dim=-1).max() > 50:  # expect: TD205 (a reshaped output)
            offsets = offsets.clamp(-50, 50)
        if self.training and self.n > 64:  # near-miss: Python ints on both sides of the `and`
            print("many offsets per point")
        return offsets


class MemoryQueue(nn.Module):
    def __init__(self, dim, size):
        super().__init__()
        self.size = size
        self.register_buffer("queue", torch.randn(dim, size))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("inited", torch.tensor([False]))
        self.register_buffer("mask", None)
        self.enabled = True

    @torch.no_grad()
    def _enqueue(self, keys):
        ptr = int(self.queue_ptr)  # expect: TD205 (a registered buffer, read on the host)
        self.queue[:, ptr : ptr + keys.shape[0]] = keys.T
        self.queue_ptr[0] = (ptr + keys.shape[0]) % self.size  # near-miss: stays on the device

    @torch.no_grad()
    def _init(self, keys):
        if self.inited:  # expect: TD205 (the truth value of a buffer)
            return
        self.queue.copy_(keys[: self.size].T)
        self.inited.fill_(True)

    def forward(self, keys):
        self._init(keys)
        if self.mask is not None and self.enabled:  # near-miss: identity and a Python flag
            keys = keys * self.mask
        if self.size > 1024:  # near-miss: a Python int attribute, not a buffer
            keys = keys.half().float()
        self._enqueue(keys)
        return keys @ self.queue


class ProbAttention(nn.Module):
    """Informer: the sampled count from NumPy on a Python int, read with NumPy's .item()."""

    def __init__(self, factor=5):
        super().__init__()
        self.factor = factor

    def forward(self, queries, keys):
        L_K, L_Q = keys.shape[1], queries.shape[1]
        U_part = self.factor * np.ceil(np.log(L_K)).astype("int").item()  # near-miss: NumPy's scalar
        u = self.factor * torch.ceil(torch.log(keys.new_tensor(L_Q))).int().item()  # expect: TD205
        return queries[:, :u] @ keys[:, :U_part].transpose(1, 2)


class MultiCropBackbone(nn.Module):
    def forward(self, crops):
        ends = torch.cumsum(torch.unique_consecutive(
            torch.tensor([c.shape[-1] for c in crops]), return_counts=True)[1], 0)
        start, outs = 0, []
        for end in ends.tolist():  # near-miss: crop sizes in a tensor made on the host (SwAV)
            outs.append(torch.cat(crops[start:end]).mean())
            start = end
        counts = torch.cumsum(torch.bincount(crops[0].flatten().long()), 0)
        return outs, counts.tolist()  # expect: TD205
