# A helper of the file that loads a checkpoint and returns the model built from it, called
# with the same path for every query atlas (scVI's label transfer): the same disk read and
# build every iteration. A helper that reads a JSON file, or one called with the loop's own
# path, is no repeated model load.
import json

import torch
from diffusers import PNDMScheduler


def build(ckpt):
    state = torch.load(ckpt, map_location="cpu")
    model = torch.nn.Linear(state["n_in"], state["n_out"])
    model.load_state_dict(state["model"])
    return model.eval()


def settings(path):
    with open(path) as f:
        return json.load(f)


def transfer(args, queries):
    out = []
    for path in queries:
        model = build(args.ckpt)  # expect: TD605
        cfg = settings(args.config)  # near-miss: a JSON file, not a model
        ensemble = build(path)  # near-miss: a different checkpoint each iteration
        out.append((model, ensemble, cfg))
    return out


def validate(args, unet):
    scheduler = PNDMScheduler.from_pretrained(args.model, subfolder="scheduler")
    return unet(scheduler.timesteps)


def each_epoch(args, unet, epochs):
    for _ in range(epochs):
        validate(args, unet)  # near-miss: the helper loads a scheduler's config, not a model
