import torch
import torch as T
from torch.backends.cuda import sdp_kernel
from torch.cuda.amp import GradScaler, autocast


def step(model, x, labels):
    with T.cuda.amp.autocast(True, torch.bfloat16):
        y = model(x)
    with autocast(dtype=torch.float16):
        y = model(x)
    scaler = GradScaler(2.0**10, enabled=False)
    with sdp_kernel(enable_flash=False, enable_cudnn=False):
        y = model(x)
    with torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False, enable_cudnn=False):
        y = model(x)
    with torch.backends.cuda.sdp_kernel(enable_flash=flag):  # not literal: not fixable
        y = model(x)
    # remap labels to 0..K-1
    unique_labels = torch.unique(labels)
    y_remapped = torch.zeros_like(labels)
    for idx, label in enumerate(unique_labels):
        y_remapped[labels == label] = idx
    return y, scaler, y_remapped


def remap_loop_var_used_later(labels):
    u = torch.unique(labels)
    r = torch.zeros_like(labels)
    for i, v in enumerate(u):
        r[labels == v] = i
    return r, i  # the loop variable is read after the loop: not fixable
