"""TD403 and a loader walked in one pass (vq-vae-2-pytorch's extract_code.py, linted in
corpus 31's round): its workers start once, persistent or not."""
import torch
from torch.utils.data import DataLoader
import tqdm as tqdm_module
from tqdm import tqdm


def extract(env, loader, model):
    pbar = tqdm(loader)
    for i, (img, name) in enumerate(pbar):
        env.put(name, model.encode(img))
        pbar.set_description(f"inserted: {i}")


def fit(loader, model, opt, epochs):
    for _ in range(epochs):
        for x in loader:
            model(x).sum().backward()
            opt.step()


def export_main(ds, model, env):
    loader = DataLoader(ds, batch_size=64, num_workers=4)  # near-miss: one pass, in extract()
    print(len(loader), "batches of", len(loader.dataset))
    extract(env, loader, model)


def embed_main(ds, encoder):
    loader = DataLoader(ds, batch_size=64, num_workers=4)  # near-miss: one pass, here
    return [encoder(x) for x in tqdm(loader)]


def train_main(ds, model, opt):
    loader = DataLoader(ds, batch_size=64, num_workers=4)  # expect: TD403
    fit(loader, model, opt, 10)


def twice_main(ds, model, env):
    loader = DataLoader(ds, batch_size=64, num_workers=4)  # expect: TD403
    extract(env, loader, model)
    extract(env, loader, model)


def epochs_main(ds, model, env, epochs):
    loader = DataLoader(ds, batch_size=64, num_workers=4)  # expect: TD403
    for _ in range(epochs):
        extract(env, loader, model)


def one_epoch_main(ds, model, opt):
    loader = DataLoader(ds, batch_size=64, num_workers=2)  # near-miss: for epoch in range(1)
    for epoch in range(1):
        for i, x in enumerate(loader, 0):
            model(x).sum().backward()
            opt.step()
    loader2 = DataLoader(ds, batch_size=64, num_workers=2)  # expect: TD403
    for epoch in range(2):
        for x in loader2:
            model(x).sum().backward()
            opt.step()


def inpainting_refs(ds, model, n_steps):
    loader = DataLoader(ds, batch_size=20, shuffle=True, num_workers=4)  # near-miss: one batch, next(iter(...))
    refer_image, _ = next(iter(loader))
    loader2 = DataLoader(ds, batch_size=20, shuffle=True, num_workers=4)  # near-miss: one batch through a named iterator
    data_iter = iter(loader2)
    second, _ = next(data_iter)
    loader3 = DataLoader(ds, batch_size=20, num_workers=4, drop_last=True)  # expect: TD403
    test_iter = iter(loader3)
    for _ in range(n_steps):  # a batch taken in every step: the iterator is made again when spent
        try:
            x, _ = next(test_iter)
        except StopIteration:
            test_iter = iter(loader3)
            x, _ = next(test_iter)
        model(x, refer_image, second)


def sample_refs(ds_name, mnist, celeba, model):
    if ds_name == "MNIST":  # each branch builds its own loader and takes one batch
        dataloader = DataLoader(mnist, batch_size=100, shuffle=True, num_workers=4)  # near-miss: one batch
        data_iter = iter(dataloader)
        samples, _ = next(data_iter)
    elif ds_name == "CELEBA":
        dataloader = DataLoader(celeba, batch_size=64, shuffle=True, num_workers=4)  # near-miss: one batch
        samples, _ = next(iter(dataloader))
    else:
        dataloader = DataLoader(celeba, batch_size=64, num_workers=4)  # expect: TD403
        for epoch in range(10):
            for samples, _ in dataloader:
                model(samples).sum().backward()
    return model(samples)


def minibatch_speed(ds, n_batches, model):
    """pytorch-wavenet's test: one iterator, several batches drawn from it: one pass."""
    dataloader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=8)  # near-miss: one iterator
    dataloader_iter = iter(dataloader)

    def calc_batches(num=1):
        for _ in range(num):
            next(dataloader_iter)

    calc_batches(n_batches)
    loader5 = DataLoader(ds, batch_size=32, num_workers=8)  # near-miss: one iterator, a loop of next()
    it5 = iter(loader5)
    for _ in range(n_batches):
        model(next(it5))


@torch.no_grad()
def inference(loader, encoder):
    return [encoder(x) for x, _ in loader]


def get_features(encoder, train_loader, test_loader):
    return inference(train_loader, encoder), inference(test_loader, encoder)


def linear_evaluation(train_set, test_set, encoder, head, epochs):
    """Spijkervet/SimCLR: the image loader is walked once, two calls down, to extract features;
    the logistic head then trains on arrays for many epochs."""
    train_loader = DataLoader(train_set, batch_size=256, num_workers=8)  # near-miss: one pass, two calls down
    test_loader = DataLoader(test_set, batch_size=256, num_workers=8)  # near-miss: one pass
    feats, test_feats = get_features(encoder, train_loader, test_loader)
    arrays = DataLoader(feats, batch_size=256, num_workers=2)  # expect: TD403
    for epoch in range(epochs):
        for f in arrays:
            head(f).sum().backward()


def _create_image_loader(path, n_cpu):
    """PyTorch-YOLOv3's detect.py: the loader its one caller walks once, through tqdm.tqdm."""
    dataloader = DataLoader(path, batch_size=8, num_workers=n_cpu, pin_memory=True)  # near-miss: one pass
    return dataloader


def _create_train_loader(path, n_cpu):
    dataloader = DataLoader(path, batch_size=8, num_workers=n_cpu, pin_memory=True)  # expect: TD403
    return dataloader


def detect(model, dataloader):
    return [model(x) for x in tqdm_module.tqdm(dataloader, desc="Detecting")]


def detect_directory(model, path):
    dataloader = _create_image_loader(path, 4)
    return detect(model, dataloader)


def train_epochs(model, path, epochs):
    dataloader = _create_train_loader(path, 4)
    for epoch in range(epochs):
        for x in tqdm_module.tqdm(dataloader):
            model(x).sum().backward()
