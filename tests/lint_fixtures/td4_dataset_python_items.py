# A Dataset that copies each item to the device cannot use workers, but when it builds the
# item with a Python loop per element (a dict remap of every token) the loading is CPU work
# that workers would overlap: TD401 stays, with the advice to move the copy out first.
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class Windows(Dataset):
    def __init__(self, tokens, old2new, device):
        self.tokens, self.old2new, self.device = tokens, old2new, device

    def __len__(self):
        return len(self.tokens) // 256

    def __getitem__(self, i):
        raw = self.tokens[i * 256:(i + 1) * 256]
        ids = torch.tensor([self.old2new[int(t)] for t in raw])  # expect: TD302
        return ids.to(self.device)  # expect: TD405


class Rows(Dataset):
    def __init__(self, table, device):
        self.table, self.device = table, device

    def __len__(self):
        return len(self.table)

    def __getitem__(self, i):
        return torch.from_numpy(self.table[i]).to(self.device)  # expect: TD405


def loaders(tokens, old2new, table):
    python_items = DataLoader(Windows(tokens, old2new, "cuda"), batch_size=64)  # expect: TD401
    memory_items = DataLoader(Rows(np.zeros((8, 4)), "cuda"), batch_size=64)  # near-miss: items indexed from memory
    return python_items, memory_items
