"""TD405: a Dataset's __getitem__ moving each sample to the device."""
import torch
from torch.utils.data import Dataset


class OnDevice(Dataset):
    def __init__(self, data, labels, device):
        self.data, self.labels, self.device = data, labels, device

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        x = self.data[idx].to(self.device)  # expect: TD405
        y = self.labels[idx].cuda()  # expect: TD405
        return x.to(torch.float32), y.to("cpu")  # a dtype, the CPU: no finding


class OnHost(Dataset):
    def __getitem__(self, idx):
        return self.data[idx].float()  # CPU tensors: no finding

    def to_device(self, device):
        return self.data.to(device)  # not per sample: no finding
