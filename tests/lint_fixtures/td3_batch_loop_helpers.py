"""TD304 with a helper of reshapes, tuple-unpacked temporaries and a flattened batch."""

import torch


def _partition_one(img, ws):
    h, w, c = img.shape
    x = img.view(h // ws, ws, w // ws, ws, c).permute(0, 2, 1, 3, 4)
    return x.reshape(-1, ws * ws, c)


def window_partition(x, ws):
    windows = []
    for b in range(x.shape[0]):  # expect: TD304
        windows.append(_partition_one(x[b], ws))
    return torch.cat(windows, 0)


def feature_cov(f):
    m = f.mean(1, keepdim=True)
    return m, (f - m) @ (f - m).T / (f.shape[1] - 1)


def whiten_batch(feat_c, feat_s):
    B, C, H, W = feat_c.shape
    fc, fs = feat_c.flatten(2), feat_s.flatten(2)
    out = torch.empty_like(fc)
    for b in range(B):  # expect: TD304
        ms, cov_s = feature_cov(fs[b])
        out[b] = cov_s @ (fc[b] - fc[b].mean(1, keepdim=True)) + ms
    return out.view(B, C, H, W)


def running_whiten(feat):
    B = feat.shape[0]
    flat = feat.flatten(1)
    out = torch.empty_like(flat)
    mean = flat[0]
    for b in range(B):  # near-miss: the running mean carries from one item to the next
        mean, var = 0.9 * mean + 0.1 * flat[b], flat[b].var()
        out[b] = (flat[b] - mean) / var.sqrt()
    return out


def names_of(batch):
    parts = []
    for b in range(batch.shape[0]):  # near-miss: a helper without tensor work
        parts.append(str(b))
    return torch.cat([batch, batch])


def d1_error(pred, gt):
    valid = gt > 0
    err = (pred - gt).abs()
    return ((err > 3) & valid).sum() / valid.sum().clamp(min=1)


def d1_per_image(pred, gt):
    per_img = []
    for i in range(pred.shape[0]):  # expect: TD304
        per_img.append(d1_error(pred[i], gt[i]))
    return torch.stack(per_img)


def mean_gap(a, b):
    return (a - b).sum() / len(a)


def gaps_per_image(pred, gt):
    per_img = []
    for i in range(pred.shape[0]):  # near-miss: a helper whose sum and len a list or array has too
        per_img.append(mean_gap(pred[i], gt[i]))
    return torch.stack(per_img)
