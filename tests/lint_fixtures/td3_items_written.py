"""TD304 where the file never stacks: items written one by one into a table made by torch."""
import torch


def normalize_rows(x):
    out = torch.empty_like(x)
    for i in range(x.shape[0]):  # expect: TD304
        out[i] = x[i] / x[i].norm()
    return out


def pairwise(a, b):
    dist = torch.zeros(len(a), len(b))
    for i in range(len(a)):
        for j in range(len(b)):  # expect: TD304
            dist[i, j] = (a[i] - b[j]).norm()
    return dist


def copy_names(names, table):
    for i in range(len(names)):  # near-miss: a list of strings written into a dict
        table[i] = names[i].upper()
    return table


def pad_each(seqs, width):
    out = torch.zeros(len(seqs), width)
    for i in range(len(seqs)):  # near-miss: a list of sequences of their own lengths
        out[i, : len(seqs[i])] = seqs[i]
    return out


def part_peaks(feature_map, k):
    B, C, H, W = feature_map.shape
    energy = feature_map.pow(2).sum(1)  # (the items of feature_map, reduced over channels)
    peaks = []
    for b in range(B):  # expect: TD304 (energy keeps feature_map's items)
        peaks.append(torch.topk(energy[b].flatten(), k).indices)
    return torch.stack(peaks)


def column_peaks(feature_map, k):
    B = feature_map.shape[0]
    per_column = feature_map.sum(0)  # near-miss: a sum over the batch, not one row per item
    peaks = []
    for b in range(B):
        peaks.append(torch.topk(per_column[b].flatten(), k).indices)
    return torch.stack(peaks)


def window_peaks(feature_map, k):
    B = feature_map.shape[0]
    windows = feature_map.flatten(0, 1)  # near-miss: the leading dim merged with the next
    peaks = []
    for b in range(B):
        peaks.append(torch.topk(windows[b], k).indices)
    return torch.stack(peaks)


class MaskHead(torch.nn.Module):
    def forward(self, feats):
        out = feats.new_empty(feats.size(0), self.pred.out_channels, *feats.shape[-2:])
        for i in range(feats.size(0)):  # expect: TD304 (new_empty makes a tensor as torch.empty does)
            out[i] = self.pred(torch.relu(self.conv(feats[i : i + 1])))[0]
        return out


def render_gaussians(centers, sigmas, H, W):
    out = centers.new_zeros(centers.shape[0], H, W)
    ys = torch.arange(H).view(H, 1)
    xs = torch.arange(W).view(1, W)
    for i in range(centers.size(0)):  # expect: TD304 (a temporary of the item, then its write)
        d2 = (ys - centers[i, 1]) ** 2 + (xs - centers[i, 0]) ** 2
        out[i] = torch.exp(-d2 / (2 * sigmas[i] ** 2))
    state = torch.zeros(H, W)
    for i in range(centers.size(0)):  # near-miss: the temporary carries from one item to the next
        state = state * 0.5 + centers[i, 0]
        out[i] = torch.exp(-state)
    return out


def project_distribution(next_pmfs, l, u, b):
    d_m_l = (u + (l == u).float() - b) * next_pmfs
    d_m_u = (b - l) * next_pmfs
    target_pmfs = torch.zeros_like(next_pmfs)
    for i in range(target_pmfs.size(0)):  # expect: TD304 (cleanrl's C51: index_add_ per row)
        target_pmfs[i].index_add_(0, l[i].long(), d_m_l[i])
        target_pmfs[i].index_add_(0, u[i].long(), d_m_u[i])
    shifted = torch.zeros_like(next_pmfs)
    for i in range(shifted.size(0) - 1):  # near-miss: each row written from the one before
        shifted[i + 1].copy_(shifted[i] * 0.5 + next_pmfs[i])
    return target_pmfs, shifted
