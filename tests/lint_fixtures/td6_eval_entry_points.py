"""TD602 where the model runs through its own inference method (``model.doc(ids)``) or over a
dict of data (``outputs.items()``): still a loop recording a graph it never uses."""
import torch
import torchvision


def encode_corpus(model, loader, device):
    model.eval()
    parts = []
    for ids, mask in loader:  # expect: TD602 (doc: the model's own entry point, after .eval())
        parts.append(model.doc(ids.to(device), mask.to(device)))
    return torch.cat(parts)


def score_series(model, windows, batch_size=1024):
    model.eval()
    scores = []
    for i in range(0, len(windows), batch_size):  # expect: TD602
        scores.append(model.anomaly_score(windows[i:i + batch_size]).detach())
    return torch.cat(scores)


def push_prototypes(loader, parallel):
    parallel.eval()
    net = parallel.module
    found = []
    for batch, _ in loader:  # expect: TD602 (push_forward: a forward by its name)
        found.append(net.push_forward(batch)[1].amin((2, 3)))
    return torch.cat(found)


def evaluate_consistency(flow_model, outputs):
    flow_model.eval()
    scores = {}
    for name, frames in outputs.items():  # expect: TD602 (a dict of data, not of modules)
        flow = flow_model(frames[:-1], frames[1:])
        scores[name] = flow.abs().mean()
    return scores


def heads_forward(self, x):
    self.eval()
    return {k: head(x) for k, head in self.heads.items()}  # a dict of modules: one forward


def plumbing(model, loader):
    model.eval()
    sizes = []
    for batch in loader:
        sizes.append(sum(p.numel() for p in model.parameters()))  # no forward: plumbing
        model.state_dict()
        model.get_config()
    return sizes


@torch.no_grad()
def greedy_decode(model, src, src_len, max_len=100):
    """An RNN decoder feeds back its last token (`y`) and appends it: the encoder runs once
    per step on the same source (pointer-generator's greedy decode)."""
    y = torch.full((src.shape[0],), 2)
    state = None
    out_tokens = []
    for _ in range(max_len):
        enc_out, enc_state = model.encoder(src, src_len)  # expect: TD601
        state = enc_state if state is None else state
        dist, state = model.decoder.step(model.embedding(y), state, enc_out)
        y = dist.argmax(1)
        out_tokens.append(y)
    return torch.stack(out_tokens, 1)


def load_detector(device):
    det = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None).to(device).eval()
    return det


def load_backbone(device):
    return torchvision.models.resnet18(weights=None).to(device)


def track_video(frames, device="cuda"):
    detector = load_detector(device)  # (eval mode set by the loader)
    boxes = []
    for frame in frames:  # expect: TD602
        boxes.append(detector([frame.to(device)])[0]["boxes"])
    return boxes


def fine_tune_features(frames, device="cuda"):
    backbone = load_backbone(device)  # near-miss: no eval mode anywhere (trained by a caller)
    return [backbone(f.to(device)) for f in frames]


@torch.inference_mode()
def upscale(net, img):
    return net(img[None].cuda()).clamp(0, 1)[0].cpu()


def run_folder(paths, weights):
    outs = []
    for path in paths:  # near-miss: the model runs in upscale(), under inference_mode
        net = RRDBNet()  # (a class built: no model run)
        net.load_state_dict(torch.load(weights, map_location="cpu"))  # expect: TD605
        net = net.cuda().eval()
        outs.append(upscale(net, torch.load(path)))
    return outs


def ensemble_predict(videos, weights, device):
    rows = []
    for video in videos:  # expect: TD602
        clip = load_clip(video).to(device)
        preds = []
        for ckpt in weights:
            model = Classifier().to(device)
            model.load_state_dict(torch.load(ckpt, map_location=device))  # expect: TD605
            preds.append(model(clip))
        for frame in frames_of(video):
            preds.append(torch.load(frame))  # near-miss: a file of this video each time
        rows.append(preds)
    return rows


def transcribe(clips, feature_extractor, whisper_model):
    whisper_model.eval()
    texts = []
    for i in range(0, len(clips), 4):  # near-miss: generate() runs under no_grad; the extractor is NumPy
        inputs = feature_extractor(clips[i:i + 4], sampling_rate=16000, return_tensors="pt")
        texts.append(whisper_model.generate(inputs.input_features, max_new_tokens=100))
    return texts


class TrajectoryPolicy(torch.nn.Module):
    def sample(self, cond, steps):
        x = torch.randn_like(cond)
        self.model.eval()
        for t in range(steps):  # near-miss: its only caller runs it under no_grad, through a variable
            x = self.model(x, t, cond)
        return x

    def sample_fast(self, cond, steps):
        x = torch.randn_like(cond)
        self.model.eval()
        for t in range(steps):  # near-miss: as sample()
            x = self.model(x, t, cond)
        return x

    @torch.no_grad()
    def predict_action(self, cond, fast=True):
        sample_fn = self.sample_fast if fast else self.sample
        return sample_fn(cond, 10)


class PointLK(torch.nn.Module):
    def forward(self, p0, p1, maxiter=10):
        return self.iclk(p0, p1, maxiter)

    def iclk(self, p0, p1, maxiter):
        training = self.ptnet.training
        self.ptnet.eval()  # (its batch norms frozen; the iterations are still trained through)
        f0 = self.ptnet(p0)
        for _ in range(maxiter):  # near-miss: part of the training forward (only forward calls it)
            p1 = p1 + (self.ptnet(p1) - f0).mean()
        self.ptnet.train(training)
        return p1


def predict_with_forces(model, z, pos):
    pos.requires_grad_(True)
    energy = model(z, pos)
    return energy, -torch.autograd.grad(energy.sum(), pos)[0]


def evaluate_forces(model, loader):
    model.eval()
    errors = []
    for z, pos, f in loader:  # near-miss: forces need autograd (autograd.grad in the helper)
        _, forces = predict_with_forces(model, z, pos)
        errors.append((forces - f).abs().mean().detach())
    return errors


class MemoryBank:
    def __init__(self, backbone, device):
        self.extractor = FeatureNet(backbone).to(device).eval()
        self.bank = None

    def _embed(self, images):
        return self.extractor(images).flatten(1)

    def _tune(self, images):
        loss = self.extractor(images).pow(2).mean()
        loss.backward()
        return loss

    def fit(self, loader):
        feats = []
        for batch in loader:  # expect: TD602 (the model was put in eval mode in __init__)
            feats.append(self._embed(batch["image"]))
        self.bank = torch.cat(feats)

    def adapt(self, loader):
        for batch in loader:  # near-miss: the method it calls trains
            self._tune(batch["image"])

    def probe(self, images, steps):
        for _ in range(steps):  # near-miss: no loop over data (an optimisation of the input)
            images = images + self._embed(images).mean()
        return images


class PerceptualLoss(torch.nn.Module):
    def __init__(self, vgg):
        super().__init__()
        self.vgg = vgg.eval()

    def features(self, loader):
        return [self.vgg(x) for x in loader]  # near-miss: a module's method, gradients may flow


def load_generator(ckpt, device):
    g = Generator()
    g.load_state_dict(torch.load(ckpt))
    return g.to(device).eval()


def translate_folder(G, loader, device):
    for x in loader:  # expect: TD602 (main passes G, a loader's eval-mode model)
        G(x.to(device)).cpu()


def run_batches(net, loader, device):
    for x in loader:  # near-miss: one caller passes a model it trains
        net(x.to(device)).sum()


def main_translate(ckpt, loader, device, opt):
    G = load_generator(ckpt, device).cuda()
    translate_folder(G, loader, device)
    run_batches(G, loader, device)
    trained = Generator().to(device)
    run_batches(trained, loader, device)


class Tracker:  # pysot's shape: the test loop calls the tracker, which runs its model
    def __init__(self, model):
        self.model = model

    def update(self, frame):
        return self.model.track(frame).argmax()

    @torch.no_grad()
    def refine(self, frame):
        return self.model.track(frame).argmax()


def run_sequence(tracker, frames):
    boxes = []
    for f in frames:  # expect: TD602 (main hands it a Tracker of an eval-mode model)
        boxes.append(tracker.update(f))
    return boxes


def refine_sequence(tracker, frames):
    boxes = []
    for f in frames:  # near-miss: the tracker's method turns autograd off itself
        boxes.append(tracker.refine(f))
    return boxes


def main_track(ckpt, frames, device):
    model = load_generator(ckpt, device)
    tracker = Tracker(model)
    return run_sequence(tracker, frames), refine_sequence(tracker, frames)


def per_relation_mrr(model, triples, n_rel, cand):
    out = {}
    for r in range(n_rel):  # expect: TD602 (a metric over the model's scores, autograd on)
        scores = model(triples[r], cand)
        out[r] = (1.0 / (scores > scores[:, :1]).sum(1).float()).mean()
    return out


def topk_accuracy(output, target, ks=(1, 5)):
    res = []
    for k in ks:  # near-miss: a metric over given outputs, no model call
        res.append((output.topk(k, 1).indices == target[:, None]).any(1).float().mean())
    return res


@torch.no_grad()
def hits_at_k(model, batches, k=10):
    return [model(b).topk(k).indices for b in batches]  # near-miss: under no_grad
