"""TD506 conv bias before BatchNorm; TD507 hand-written attention."""

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


def stem():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),  # expect: TD506
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, bias=False),  # near-miss: no bias
        nn.BatchNorm2d(32),
        nn.Conv2d(32, 32, 1),  # near-miss: followed by ReLU, not BatchNorm
        nn.ReLU(),
        nn.BatchNorm2d(32),
    )


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=True)  # expect: TD506
        self.bn = nn.BatchNorm2d(c)
        self.proj = nn.Conv2d(c, c, 1)  # near-miss: not followed by a norm
        self.norm2 = nn.LayerNorm(c)

    def forward(self, x):
        return self.proj(torch.relu(self.bn(self.conv(x))))


class Attention(nn.Module):
    def forward(self, q, k, v, mask):
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(mask == 0, float("-inf"))
        att = F.softmax(att, dim=-1)  # expect: TD507
        return att @ v

    def inline(self, q, k, v):
        return torch.softmax(q @ k.mT / 8.0, dim=-1) @ v  # expect: TD507

    def classifier(self, features, weight):
        logits = features @ weight.T  # near-miss: a softmax over class logits
        return F.softmax(logits, dim=-1)


def fused(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)  # near-miss: the fused kernel


def vgg_layers(cfg):
    layers = []
    for v in cfg:
        layers += [nn.Conv2d(3, v, 3), nn.BatchNorm2d(v), nn.ReLU()]  # expect: TD506
        layers += [nn.Conv2d(3, v, 3), nn.ReLU()]  # near-miss: no norm
    return nn.Sequential(*layers)


def attend_bmm(q, k, v):
    d = q.size(-1)
    return torch.bmm(F.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(d), dim=2), v)  # expect: TD507 (one line)


def vgg_layers(cfg, batch_norm=True):
    layers, in_channels = [], 3
    for v in cfg:
        conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)  # expect: TD506 (no fix: shared)
        if batch_norm:
            layers += [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
        else:
            layers += [conv2d, nn.ReLU(inplace=True)]
        in_channels = v
    stem = nn.Sequential(OrderedDict([
        ("conv", nn.Conv1d(80, 64, kernel_size=5, padding=2)),  # expect: TD506
        ("bn", nn.BatchNorm1d(64)),
    ]))
    plain = nn.Sequential(OrderedDict([("conv", nn.Conv1d(80, 64, 5)), ("act", nn.ReLU())]))
    return nn.Sequential(*layers), stem, plain


def whisper_qkv_attention(q, k, v, mask, n_ctx):
    qk = (q * 0.125) @ (k * 0.125).transpose(-1, -2)
    qk = qk + mask[:n_ctx, :n_ctx]
    w = F.softmax(qk.float(), dim=-1).to(q.dtype)  # expect: TD507 (a float32 softmax in fp16 code)
    return w @ v


def attention_map(q, k):
    scores = q @ k.transpose(-1, -2)
    return F.softmax(scores.float(), dim=-1).to(q.dtype)  # near-miss: the weights are the result


class ConvModule(nn.Sequential):
    def __init__(self, cin, cout, k=3):
        super().__init__(
            nn.Conv2d(cin, cout, k, padding=k // 2),  # expect: TD506 (a Sequential subclass)
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class ConvAct(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU())  # near-miss: no norm


def dcgan_generator(nz=100, ngf=64):
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0),  # expect: TD506 (a transposed convolution)
        nn.BatchNorm2d(ngf * 8),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, 3, 4, 2, 1, bias=False),  # near-miss: no bias
        nn.Tanh(),
    )


def einsum_attention(q, k, v):
    sim = torch.einsum("b h i d, b h j d -> b h i j", q, k) * 0.125
    attn = sim.softmax(dim=-1)  # expect: TD507 (an einsum of q and k)
    return torch.einsum("b h i j, b h j d -> b h i d", attn, v)


def mixture_of_softmaxes(logits, combine):
    if combine is not None:
        prob = logits.softmax(dim=-1)  # near-miss: logits come from the einsum only after
        mos = torch.einsum("... k d, ... k -> ... d", prob, combine)
        logits = torch.log(mos)
    return logits


def weighted_experts(scores, experts):
    mix = torch.einsum("b k, b k d -> b k d", scores, experts)
    gates = mix.softmax(dim=1)  # near-miss: a weighted sum, no q and k
    return torch.einsum("b k d, b k d -> b d", gates, experts)


class SwitchedAttention(nn.Module):  # the fused kernel behind a switch of the model's own
    def __init__(self, d, fused=True):
        super().__init__()
        self.qkv, self.fused = nn.Linear(d, 3 * d), fused

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v)
        s = torch.einsum("bqd,bkd->bqk", q, k) / 8.0
        if self.training:
            return torch.einsum("bqk,bkd->bqd", s.softmax(-1), v)  # expect: TD507
        att = torch.softmax(q @ k.transpose(-2, -1) / 8.0, dim=-1)  # expect: TD507
        return self.drop(att) @ v


class VersionedAttention(nn.Module):  # nanoGPT's: a fallback where torch lacks the kernel
    def __init__(self, d):
        super().__init__()
        self.flash = hasattr(F, "scaled_dot_product_attention")

    def forward(self, q, k, v):
        if self.flash:
            return F.scaled_dot_product_attention(q, k, v)
        else:
            att = (q @ k.transpose(-2, -1)) / 8.0
            return F.softmax(att, dim=-1) @ v  # near-miss: the fallback for an older torch


class PixelDecoderBlock(nn.Module):
    def __init__(self, ch, use_bn=True):
        super().__init__()
        if use_bn:
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)  # expect: TD506
            self.norm = nn.BatchNorm2d(ch)
        else:
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)  # near-miss: this branch's norm is GroupNorm
            self.norm = nn.GroupNorm(8, ch)

    def forward(self, x):
        return self.norm(self.conv(x))


class SetAbstraction(nn.Module):
    """PointNet++: shared MLPs as ModuleLists filled in a loop, paired by zip in forward."""

    def __init__(self, mlp, last):
        super().__init__()
        self.convs, self.bns = nn.ModuleList(), nn.ModuleList()
        for out in mlp:
            self.convs.append(nn.Conv2d(last, out, 1))  # expect: TD506
            self.bns.append(nn.BatchNorm2d(out))
            last = out

    def forward(self, x):
        for conv, bn in zip(self.convs, self.bns):
            x = F.relu(bn(conv(x)))
        return x


class IndexedBlocks(nn.Module):
    def __init__(self, widths):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(w, w, 3, padding=1) for w in widths])  # expect: TD506
        self.norms = nn.ModuleList([nn.BatchNorm1d(w) for w in widths])
        self.gconvs = nn.ModuleList([nn.Conv1d(w, w, 3, padding=1) for w in widths])  # near-miss
        self.gns = nn.ModuleList([nn.GroupNorm(4, w) for w in widths])

    def forward(self, x):
        for i in range(len(self.convs)):
            x = self.norms[i](self.convs[i](x)).relu()
        for i, (conv, gn) in enumerate(zip(self.gconvs, self.gns)):
            x = gn(conv(x))  # (GroupNorm keeps the bias's effect)
        return x


class WindowAttention(nn.Module):
    """Swin: the softmax through an nn.Softmax attribute."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self.softmax(attn)  # expect: TD507
        return (attn @ v).transpose(1, 2).reshape(b, n, c)


class FeaturePropagation(nn.Module):
    """yanx27's PointNet++: the convs walked by enumerate, the norm taken at the loop's index."""

    def __init__(self, mlp, last):
        super().__init__()
        self.mlp_convs, self.mlp_bns = nn.ModuleList(), nn.ModuleList()
        self.skips, self.skip_bns = nn.ModuleList(), nn.ModuleList()
        for out in mlp:
            self.mlp_convs.append(nn.Conv1d(last, out, 1))  # expect: TD506
            self.mlp_bns.append(nn.BatchNorm1d(out))
            self.skips.append(nn.Conv1d(last, out, 1))  # near-miss: its norm reads the input
            self.skip_bns.append(nn.BatchNorm1d(last))
            last = out

    def forward(self, x):
        for i, conv in enumerate(self.mlp_convs):
            bn = self.mlp_bns[i]
            x = F.relu(bn(conv(x)))
        for i, skip in enumerate(self.skips):
            norm = self.skip_bns[i]
            x = skip(norm(x))
        return x


class ConvLayer(nn.Module):
    """Informer's distilling layer: the conv's output reaches the norm through `x`."""

    def __init__(self, c_in):
        super().__init__()
        self.downConv = nn.Conv1d(c_in, c_in, kernel_size=3, padding=1, padding_mode="circular")  # expect: TD506
        self.norm = nn.BatchNorm1d(c_in)
        self.proj = nn.Conv1d(c_in, c_in, 1)  # near-miss: an activation between it and the norm
        self.norm2 = nn.BatchNorm1d(c_in)

    def forward(self, x):
        x = self.downConv(x.permute(0, 2, 1))
        x = self.norm(x)
        y = self.proj(x)
        y = F.elu(y)
        return self.norm2(y)


class ResidualBlock(nn.Module):
    """princeton-vl/RAFT's extractor: the norm is chosen in branches, the conv made once."""

    def __init__(self, planes, norm_fn="group"):
        super().__init__()
        self.conv1 = nn.Conv2d(planes, planes, 3, padding=1)  # expect: TD506 (no autofix: 'none' needs it)
        if norm_fn == "batch":
            self.norm1 = nn.BatchNorm2d(planes)
        elif norm_fn == "group":
            self.norm1 = nn.GroupNorm(planes // 8, planes)
        else:
            self.norm1 = nn.Sequential()

    def forward(self, x):
        return F.relu(self.norm1(self.conv1(x)))
