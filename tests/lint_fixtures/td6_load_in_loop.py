"""TD605: a model, tokenizer or pipeline loaded in every iteration of a loop."""
import os

import torch
from transformers import AutoModel, AutoTokenizer, pipeline


def embed_all(texts, name):
    out = []
    for text in texts:
        tokenizer = AutoTokenizer.from_pretrained(name)  # expect: TD605
        model = AutoModel.from_pretrained(name)  # expect: TD605
        with torch.no_grad():
            out.append(model(**tokenizer(text, return_tensors="pt")).last_hidden_state)
    return out


def classify(texts):
    labels = []
    while texts:
        clf = pipeline("sentiment-analysis")  # expect: TD605
        labels.append(clf(texts.pop())[0]["label"])
    return labels


def compare_checkpoints(paths, net, x):
    for path in paths:
        net.load_state_dict(torch.load(path))  # a different checkpoint each time: no finding
        yield net(x)


def compare_models(names, x):
    for name in names:
        yield AutoModel.from_pretrained(name)(x)  # a different model each time: no finding


def load_adapters(pipe, weights, encoder_name):
    for weight in weights:
        if pipe.image_encoder is None:
            pipe.image_encoder = AutoModel.from_pretrained(encoder_name)  # lazy, once: no finding
        pipe.load(weight)


def stage_nights(paths, args, ensemble):
    for path in paths:
        if args.ensemble:
            prob = ensemble(path)
        else:
            model = torch.load(args.model, weights_only=False)  # expect: TD605
            prob = model(torch.load(path))
        yield prob


def stage_nights_refreshed(paths, args):
    model = None
    for i, path in enumerate(paths):
        if model is None or i % 1000 == 0:
            model = torch.load(args.model, weights_only=False)  # near-miss: loaded on a test that changes
        yield model(torch.load(path))


def track_sequences(seqs, reid_ckpt, device, ReIDNet):
    for seq in seqs:
        reid = ReIDNet().to(device)
        if os.path.exists(reid_ckpt):
            reid.load_state_dict(torch.load(reid_ckpt, map_location=device))  # expect: TD605
        for frame in seq:
            if os.path.exists(frame + ".pt"):
                yield reid(torch.load(frame + ".pt"))  # near-miss: a file of this sequence
