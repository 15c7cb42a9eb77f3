# A pinned loader's batch unpacked in the loop body name by name (images, true_masks =
# batch["image"], batch["mask"]: Pytorch-UNet's training loop) is still the batch: each
# blocking copy of it is TD404; a name paired with something else (the class weights) is not.
import torch
from torch.utils.data import DataLoader


def train(model, ds, opt, device, weights):
    loader_args = dict(batch_size=8, num_workers=4, pin_memory=True, persistent_workers=True)
    loader = DataLoader(ds, shuffle=True, **loader_args)
    for batch in loader:
        images, true_masks, class_w = batch["image"], batch["mask"], weights
        images = images.to(device=device, dtype=torch.float32)  # expect: TD404
        true_masks = true_masks.to(device)  # expect: TD404
        class_w = class_w.to(device)  # near-miss: the weights passed in, not the batch
        loss = model(images, true_masks, class_w)
        loss.backward()
        opt.step()


def data_dependent_init(model, ds):  # glow-tts's init.py: one batch sets the actnorm statistics
    loader = DataLoader(ds, batch_size=8, num_workers=4, pin_memory=True, persistent_workers=True)
    for x, y in loader:
        x, y = x.cuda(), y.cuda()  # near-miss: the loop ends in a break, one batch
        model(x, y, ddi=True)
        break
