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

# A tensor handed to the DataLoader as the dataset itself (a batch of source sentences to
# translate) is indexed in memory like a TensorDataset: no workers wanted (blind corpus 35's
# beam search); a tensor made on the device is neither loaded nor pinned.
sources = torch.randint(3, 32000, (64, 40))
by_sentence = DataLoader(sources, batch_size=16)  # expect: TD402 (no TD401: a tensor in memory)
on_gpu = DataLoader(torch.randn(64, 8).to(torch.device("cuda")), batch_size=16)
by_path = DataLoader(ImageFolder("data/val"), batch_size=16)  # expect: TD401,TD402
