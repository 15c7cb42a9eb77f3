# TD401 / TD402 / TD403 / TD404 fixtures. This file moves batches with .cuda(), so TD402 applies.
import torch
import torch.utils.data as tud
from tqdm import tqdm
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data import DataLoader as DL


def loaders(ds, cfg, kwargs):
    a = DataLoader(ds, batch_size=32)  # expect: TD401,TD402
    b = DL(ds, num_workers=0, pin_memory=True)  # expect: TD401
    c = tud.DataLoader(ds, num_workers=4, pin_memory=True)  # expect: TD403
    d = DataLoader(ds, num_workers=cfg.workers, pin_memory=False)  # expect: TD402,TD403
    ok1 = DataLoader(ds, num_workers=4, pin_memory=True, persistent_workers=True)
    ok2 = DataLoader(ds, num_workers=cfg.w, pin_memory=True, persistent_workers=cfg.w > 0)
    ok3 = DataLoader(ds, **kwargs)  # options not visible statically
    for x in a:
        x = x.cuda()
    return a, b, c, d, ok1, ok2, ok3


def pinned(ds, device, model):
    loader = DataLoader(ds, num_workers=2, pin_memory=True, persistent_workers=True)
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device), y.cuda()  # expect: TD404,TD404
        model(x.to(device, non_blocking=True), y.to(torch.float16))  # async copy; a dtype cast
    for batch in loader:
        ids = batch["input_ids"].to(device)  # expect: TD404
    for batch in loader:
        moved = {k: v.to(device) for k, v in batch.items()}  # expect: TD404 (Hugging Face's copy)
        kept = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    for data, _ in loader:
        data = data.to("cuda")  # expect: TD404 (a device string)
        half = data.to("cpu")  # near-miss: back to the host, not a pinned copy to the device
    for q, d in loader:
        q, d = (t.cuda() for t in (q, d))  # expect: TD404 (a generator over the batch's names)
        names = [n.to(device) for n in (ids, half)]  # names of no batch of this loop
    correct = 0
    for feats, labels in loader:
        guess = model(feats.cuda(non_blocking=True)).argmax(1)
        correct += (guess == labels.to(device)).sum().item()  # near-miss: read back at once
    return ids, moved, kept, half, q, d, names


def fit_on_the_device(model, X, y, device):
    ds = TensorDataset(X.to(device), y.to(device))
    on_device = DataLoader(ds, batch_size=256, shuffle=True)  # near-miss: CUDA tensors, in memory
    on_host = DataLoader(TensorDataset(X, y), batch_size=256)  # expect: TD402 (no TD401: one gather per batch)
    return on_device, on_host


def make_set(n):
    x = torch.randn(n, 256)
    return TensorDataset(x, x[:, :10].argmax(1))


def make_files(root):
    return torchvision_folder(root)


train_in_memory = DataLoader(make_set(8192), batch_size=64)  # expect: TD402 (a TensorDataset of make_set's host x: one gather a batch, no TD401)
train_from_files = DataLoader(make_files("data/"), batch_size=64)  # expect: TD401,TD402


def mingpt_trainer(ds, config):
    loader = DataLoader(
        ds,
        sampler=torch.utils.data.RandomSampler(ds, replacement=True, num_samples=int(1e10)),
        shuffle=False,
        pin_memory=True,
        batch_size=config.batch_size,
        num_workers=config.num_workers,  # near-miss: TD403 (one endless iterator, never respawned)
    )
    return loader


def make_pinned_loader(ds):
    return DataLoader(ds, batch_size=64, num_workers=4, pin_memory=True, persistent_workers=True)


def train_epoch(model, loader, device):
    for x, y in loader:
        x = x.to(device)  # expect: TD404 (the loader passed in pins: main_pinned's)
        y = y.to(device, non_blocking=True)
        model(x, y).backward()


def stage_one(model, ds, device):
    loader = make_pinned_loader(ds)
    for x, _ in loader:
        model(x.cuda()).sum().backward()  # expect: TD404 (make_pinned_loader pins)


def main_pinned(model, ds, device):
    train_loader = DataLoader(ds, batch_size=64, num_workers=4, pin_memory=True,
                              persistent_workers=True)
    train_epoch(model, train_loader, device)
    stage_one(model, ds, device)



def make_loaders(train_set, test_set, final_set):
    train_dl = DataLoader(train_set, batch_size=64, num_workers=4, pin_memory=True, persistent_workers=True)
    test_dl = DataLoader(test_set, batch_size=512, num_workers=4, pin_memory=True)  # expect: TD403
    final_test_dl = DataLoader(final_set, batch_size=512, num_workers=4, pin_memory=True)  # near-miss: once
    return train_dl, test_dl, final_test_dl


def fit(model, opt, train_set, test_set, final_set, epochs, evaluate):
    train_dl, test_dl, final_test_dl = make_loaders(train_set, test_set, final_set)
    for epoch in range(epochs):
        for x, y in train_dl:
            model(x).sum().backward()
            opt.step()
        print(epoch, evaluate(model, test_dl))
    return evaluate(model, final_test_dl)


def get_loaders(train_set, val_set):
    train = DataLoader(train_set, batch_size=64, num_workers=4, pin_memory=True, persistent_workers=True)
    val = DataLoader(val_set, batch_size=256, num_workers=4, pin_memory=True, persistent_workers=True)
    return train, val


def fit_ctr(model, opt, train_set, val_set, device):
    train_loader, val_loader = get_loaders(train_set, val_set)
    for x, y in train_loader:
        loss = model(x.to(device)).sum()  # expect: TD404
        loss.backward()
        opt.step()
    return val_loader


def skipgram_epoch(model, pairs, opt):
    for ab, s in DataLoader(pairs, batch_size=4096, shuffle=True, num_workers=2,  # (built in the
                            persistent_workers=True, pin_memory=True):  # loop's header)
        ab = ab.cuda()  # expect: TD404
        loss = model(ab, s.cuda(non_blocking=True))
        loss.backward()
        opt.step()


def link_prediction_epoch(model, predictor, pos_train, optimizer, batch_size):
    for perm in DataLoader(range(pos_train.size(1)), batch_size, shuffle=True):  # near-miss: index batches
        edge = pos_train[:, perm.to(pos_train.device)]
        loss = -predictor(model(edge)).log().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return pos_train.cuda()


class SpeakerTrainer:
    def train_network(self, epoch, loader):
        for num, (data, labels) in enumerate(loader, start=1):
            labels = labels.cuda(non_blocking=True)
            data = data.cuda()  # expect: TD404
            self.step(data, labels)


def speaker_main(trainset, trainer, epochs):
    loader = DataLoader(trainset, batch_size=64, shuffle=True, num_workers=4, pin_memory=True,
                        persistent_workers=True)
    for epoch in range(epochs):
        trainer.train_network(epoch=epoch, loader=loader)
        pbar = tqdm(loader, desc=f"epoch {epoch}")
        for x, y in pbar:
            x, y = x.to("cuda"), y.to("cuda", non_blocking=True)  # expect: TD404


def reid_main(net, bank_set, train_sets, epochs):
    loaders = []
    for ds in train_sets:  # a set-up loop: one loader per dataset, built once
        loaders.append(DataLoader(ds, batch_size=64, num_workers=2, pin_memory=True, persistent_workers=True))  # near-miss: TD403
    for epoch in range(epochs):
        bank = extract(DataLoader(bank_set, batch_size=256, num_workers=8, pin_memory=True, persistent_workers=True))  # expect: TD403
        train(epoch, net, bank, loaders)


def continual(tasks, train_full, test_full, targets, workers):
    for task_id, classes in enumerate(tasks):  # a task loop: each task's own data
        idx = [i for i, t in enumerate(targets) if t in classes]
        train_loader = DataLoader(Subset(train_full, idx), num_workers=workers, pin_memory=True, persistent_workers=True)  # near-miss: TD403
        tests = [DataLoader(Subset(test_full, c), num_workers=workers, pin_memory=True, persistent_workers=True) for c in tasks[: task_id + 1]]  # near-miss: TD403
        train(train_loader, tests)


def train_vocoder(trainset, generator, device, epochs):
    train_loader = DataLoader(trainset, num_workers=4, batch_size=16, pin_memory=True, persistent_workers=True)
    with torch.autograd.profiler.record_function("train"):
        for epoch in range(epochs):
            for i, batch in enumerate(train_loader):
                x, y, _, y_mel = batch
                x = x.to(device, non_blocking=True)  # near-miss: TD404 (non_blocking)
                y = y.to(device)  # expect: TD404
                generator(x, y_mel).backward()


def train_buckets(train_set, model, opt, epochs, workers):
    for epoch in range(epochs):
        sampler = BucketSampler(train_set.lengths, shuffle=True, seed=epoch)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, pin_memory=True, persistent_workers=True)  # expect: TD403
        train(loader, model, opt)


def build_loaders(train_ds, val_ds, workers):
    kw = dict(num_workers=workers, pin_memory=True, persistent_workers=True)
    return DataLoader(train_ds, 256, shuffle=True, **kw), DataLoader(val_ds, 256, **kw)


def build_unpinned(train_ds, workers):
    kw = {"num_workers": workers, "pin_memory": True, "persistent_workers": True}
    kw["pin_memory"] = False
    return DataLoader(train_ds, 256, **kw), None


@torch.no_grad()
def validate_linear(val_loader, model):
    for images, target in val_loader:
        images = images.cuda()  # expect: TD404 (pinned through **kw, returned in a tuple)
        model(images).argmax(1).eq(target.cuda(non_blocking=True))


@torch.no_grad()
def check_unpinned(loader, model):
    for images, target in loader:
        model(images.cuda())  # near-miss: TD404 (the **kw was changed after it was built)


def linear_probe(train_ds, val_ds, model, workers):
    train_loader, val_loader = build_loaders(train_ds, val_ds, workers)
    plain_loader, _ = build_unpinned(train_ds, workers)
    validate_linear(val_loader, model)
    check_unpinned(plain_loader, model)


@torch.no_grad()
def evaluate_ap(model, root):
    loader = DataLoader(TestImages(root), batch_size=1, num_workers=2, pin_memory=True)  # near-miss: a test set's loader, iterated once
    return [model(img.cuda(non_blocking=True)) for img in loader]


def train_all(model, root, opt):
    loader = DataLoader(TrainImages(root), batch_size=8, num_workers=2, pin_memory=True)  # expect: TD403
    for epoch in range(10):
        for img in loader:
            model(img.cuda(non_blocking=True)).sum().backward()
            opt.step()


def dataset_demo(root):
    loader = DataLoader(TrainImages(root), batch_size=12, shuffle=True, num_workers=2)  # near-miss: printed, never moved
    for point, label in tqdm(loader):
        print(point.shape, len(label))
    batches = DataLoader(TrainImages(root), batch_size=12, num_workers=2)  # expect: TD402
    for point, label in batches:
        print(point.cuda().shape)
