"""TD302 when the per-label dict lookups are first kept in a list, then made a tensor."""

import torch

ELEMENT_IDS = {1: 0, 6: 1, 7: 2, 8: 3, 9: 4}
VOCAB = {"<pad>": 0, "a": 1, "b": 2}


def element_types(numbers):
    kinds = [ELEMENT_IDS[n] for n in numbers.tolist()]  # expect: TD302
    return torch.tensor(kinds)


def token_ids(words):
    ids = [VOCAB[w] for w in words]  # near-miss: strings from the tokenizer, no tensor read
    return torch.tensor(ids)


def shifted(numbers):
    values = [n + 1 for n in range(4)]  # near-miss: no lookup
    return torch.tensor(values) + numbers


def first_seen_ids(labels):
    remap = {}
    for lab in labels.tolist():  # expect: TD302
        if lab not in remap:
            remap[lab] = len(remap)
    return remap


def vocab_of(words):
    vocab = {}
    for w in words:  # near-miss: strings from the tokenizer, no tensor read
        vocab.setdefault(w, len(vocab))
    return vocab


def user_index(raw):
    users = torch.unique(raw[:, 0]).tolist()
    user_map = {u: i for i, u in enumerate(users)}  # expect: TD302 (the host copy one line up)
    return user_map


def label_index(names):
    classes = sorted(set(names))
    return {c: i for i, c in enumerate(classes)}  # near-miss: label strings, no tensor copied
