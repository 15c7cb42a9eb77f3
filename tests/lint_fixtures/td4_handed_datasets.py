# A DataLoader over a dataset handed in as a parameter: what the file's callers pass decides.
# A Dataset whose __getitem__ copies each item to the GPU gives device tensors, which cannot be
# pinned (TD402 would be wrong advice); a host dataset handed the same way still wants pinning.
import torch
from torch.utils.data import DataLoader, Dataset


class Utterances(Dataset):
    def __init__(self, paths, device):
        self.paths, self.device = paths, device

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.load(self.paths[i]).to(self.device), i  # expect: TD405


class HostUtterances(Utterances):
    def __getitem__(self, i):
        return torch.load(self.paths[i]), i  # near-miss: stays on the host


def probe(model, ds):
    loader = DataLoader(ds, batch_size=32, shuffle=True)  # expect: TD401
    return [model(x).argmax(-1) for x, _ in loader]


def fit(model, ds, device):
    loader = DataLoader(ds, batch_size=32, shuffle=True)  # expect: TD401, TD402
    return [model(x.to(device)).argmax(-1) for x, _ in loader]


def main(model, paths):
    device = torch.device("cuda")
    ds = Utterances(paths, device)
    probe(model, ds)
    fit(model, HostUtterances(paths, device), device)


class Backbones(Dataset):  # items padded from NumPy, then put where `device` says
    def __init__(self, items, n_res, device):
        self.items, self.n_res, self.device = items, n_res, device

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        xyz = torch.zeros(self.n_res, 3)
        xyz[: len(self.items[i])] = torch.from_numpy(self.items[i]).float()
        return xyz.to(self.device)  # expect: TD405


def train_backbones(model, items, device):
    host = DataLoader(Backbones(items, 64, device="cpu"), batch_size=8, shuffle=True)  # expect: TD401, TD402
    also_host = DataLoader(Backbones(items, 64, "cpu"), batch_size=8, shuffle=True)  # expect: TD401, TD402
    on_gpu = DataLoader(Backbones(items, 64, device), batch_size=8)  # near-miss: its items are copied to the GPU
    return [model(x.to(device)) for x in host], [model(x.to(device)) for x in also_host], [model(x) for x in on_gpu]
