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
