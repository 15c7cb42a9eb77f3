# A submodule of a loaded LightningModule (StyleGAN2's EMA generator, G_ema) cast to float16
# for sampling: the whole generator runs in half precision, as the model itself would.
from lit import StyleGAN2


def sample(ckpt, device, z):
    G = StyleGAN2.load_from_checkpoint(ckpt).G_ema.to(device)
    G = G.half()  # expect: TD501
    return G(z.half())


def sample_autocast(ckpt, device, z, torch):
    G = StyleGAN2.load_from_checkpoint(ckpt).G_ema.to(device).eval()
    with torch.autocast("cuda", dtype=torch.float16):  # near-miss: autocast keeps norms in fp32
        return G(z)


def settings(ckpt):
    hp = StyleGAN2.load_from_checkpoint(ckpt).hparams
    lr = hp.lr.half() if hasattr(hp.lr, "half") else hp.lr  # near-miss: the hyperparameters
    return lr
