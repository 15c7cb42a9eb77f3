# A DataLoader over a split of a dataset (random_split, Subset) loads what the split dataset
# holds: a split of a TensorDataset is tensors in memory (one gather a batch: no workers
# wanted, pinning still helps), a split of a file-backed dataset still wants workers. The
# tensors of a TensorDataset are read where it is made (make_series's x, not to_gpu's x).
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset, random_split
from torchvision.datasets import ImageFolder


def make_series(n):
    x = torch.sin(torch.linspace(0, 10, n)).unsqueeze(1)
    return TensorDataset(x, x.roll(1, 0))


def to_gpu(x):
    x = x.cuda()
    return x


def fit(model):
    device = torch.device("cuda")
    data = make_series(4096)
    train, val = random_split(data, [3600, 496])
    head = Subset(train, range(512))
    a = DataLoader(train, batch_size=64, shuffle=True)  # expect: TD402 (no TD401: tensors in memory)
    b = DataLoader(head, batch_size=64)  # expect: TD402
    images = ImageFolder("data/train")
    seen, unseen = random_split(images, [0.9, 0.1])
    c = DataLoader(seen, batch_size=64)  # expect: TD401,TD402
    for x, y in a:
        model(x.to(device)).sum().backward()
    return b, c, val, unseen


series = DataLoader(make_series(256), batch_size=32)  # expect: TD402 (host tensors: no TD401)
