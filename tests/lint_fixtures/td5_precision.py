# TD501 / TD502 / TD503 / TD504 fixtures.
import torch
import torchvision
import torch as T
from torch.backends.cuda import sdp_kernel
from torch.cuda.amp import GradScaler, autocast


def infer(model, net, x, weights):
    model = model.half()  # expect: TD501
    net.to(torch.float16)  # expect: TD501
    enc = MyEncoder().eval().half()  # expect: TD501
    x = x.half()  # a tensor
    w = weights.to(torch.float16)  # a tensor
    m2 = model.to(torch.bfloat16)  # not float16
    with torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False):  # expect: TD502
        y = model(x)
    with sdp_kernel():  # expect: TD502
        y = model(x)
    with T.cuda.amp.autocast(dtype=torch.bfloat16):  # expect: TD503
        y = model(x)
    with autocast(True, torch.float16):  # expect: TD503
        y = model(x)
    with torch.amp.autocast("cuda"):
        y = model(x)
    scaler = torch.cuda.amp.GradScaler(init_scale=2.0**10)  # expect: TD504
    scaler2 = GradScaler()  # expect: TD504
    scaler3 = torch.amp.GradScaler("cuda")
    return enc, y, w, m2, scaler, scaler2, scaler3


class MyEncoder(torch.nn.Module):
    pass


def load_for_inference(AutoModelForSeq2SeqLM, AutoTokenizer, name):
    model = AutoModelForSeq2SeqLM.from_pretrained(name).half().cuda().eval()  # expect: TD501
    tokenizer = AutoTokenizer.from_pretrained(name)  # near-miss: a tokenizer has no weights
    return model, tokenizer


def distill_setup(teacher, half_teacher):
    teacher = teacher.eval()
    if half_teacher:
        teacher = teacher.half()  # expect: TD501 (a teacher is a model)
    return teacher


def load_reranker(path, fp16):
    rr = CrossEncoder().to("cuda").eval()
    rr.load_state_dict(torch.load(path))
    if fp16:
        rr = rr.half()  # expect: TD501
    return rr


def load_scores(path):
    scores = torch.load(path)
    return scores.half()  # near-miss: a tensor of scores, not a model


def load_detector(device):
    det = torchvision.models.detection.fasterrcnn_resnet50_fpn_v2(weights=None).to(device).eval()
    return det.half()  # expect: TD501


def half_detector(detector):
    return detector.half()  # expect: TD501


def export_fp16(model, path):
    model = model.cpu().half()  # expect: TD501 (moved to the host first, then cast)
    torch.save(model.state_dict(), path)


def score_pairs(rm, enc):
    rm = rm.half().eval()  # expect: TD501 (only a module has .eval())
    feats = enc.half().contiguous()  # near-miss: a tensor, no .eval()
    return rm(feats)


def load_generator(ckpt, device):
    g = Generator()
    g.load_state_dict(torch.load(ckpt))
    return g.to(device).eval()


def read_frames(path):
    return torch.load(path)


def translate(ckpt, frames_path, device):
    g = load_generator(ckpt, device).half()  # expect: TD501 (the loader returns an eval-mode model)
    frames = read_frames(frames_path).half()  # near-miss: a loader of tensors, no .eval()
    return g(frames)


def sample_lit(ckpt, data, device):
    ldm = LitDiffusion.load_from_checkpoint(ckpt, sd_path=data).to(device).eval()
    ldm = ldm.half()  # expect: TD501 (Lightning's load_from_checkpoint returns a module)
    batch = BatchStats.from_file(data)
    batch = batch.half()  # near-miss: no module, no .eval()
    return ldm(batch)


# princeton-vl/RAFT binds the deprecated class to a name (for torch < 1.6), then calls
# `with amp_context(enabled=...)` in every forward
try:
    amp_context = torch.cuda.amp.autocast  # expect: TD503
    make_scaler = T.cuda.amp.GradScaler  # expect: TD504
except AttributeError:
    amp_context = None
new_context = torch.amp.autocast  # near-miss: the current API
amp_module = torch.cuda.amp  # near-miss: the module, not the class
