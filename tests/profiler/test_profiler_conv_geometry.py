"""A convolution on feature maps about its kernel's size computes mostly zero padding: the
recorder reads each convolution's geometry at its first call, the tree carries it, and a part
made of such convolutions is told so, with a saving on those that are their centre tap
(pytorch/examples siamese_network: torchvision's ResNet-18 on 28x28 MNIST, its last stage on
1x1 maps)."""

import copy
import itertools

import pytest
import torch
from torch import nn

from tests.hotlines.hotlines_helpers import profile
from torchdoctor.analyze.advice import advise
from torchdoctor.collect.conv_geometry import _taps_inside, conv_geometry


def test_taps_inside_match_a_brute_force_count():
    for size, k, st, p, d in itertools.product(range(1, 7), range(1, 5), (1, 2, 3), range(4), (1, 2)):
        out = (size + 2 * p - d * (k - 1) - 1) // st + 1
        if out <= 0:
            continue
        brute = sum(1 for o in range(out) for j in range(k) if 0 <= o * st - p + j * d < size)
        assert _taps_inside(size, k, st, p, d) == (out, brute)


@pytest.mark.parametrize(
    ("conv", "shape", "share", "centre"),
    [
        (nn.Conv2d(4, 4, 3, padding=1), (2, 4, 1, 1), 0.8889, True),
        (nn.Conv2d(4, 4, 3, stride=2, padding=1), (2, 4, 2, 2), 0.5556, False),
        (nn.Conv2d(4, 4, 3, padding="same"), (2, 4, 1, 1), 0.8889, True),
        (nn.Conv1d(4, 4, 5, padding=2), (2, 4, 1), 0.8, True),
        (nn.Conv3d(2, 2, 3, padding=1), (1, 2, 1, 1, 1), 0.963, True),
        (nn.Conv2d(4, 4, 3, padding=1), (4, 1, 1), 0.8889, True),  # unbatched
        (nn.Conv2d(4, 4, 3, padding=2, dilation=2), (2, 4, 1, 1), 0.8889, True),
    ],
)
def test_geometry_of_small_maps(conv, shape, share, centre):
    geometry = conv_geometry(conv, (torch.zeros(shape),))
    assert geometry["padding_share"] == pytest.approx(share, abs=1e-3)
    assert geometry["centre_tap"] is centre
    if centre:  # the claim the advice makes: the 1x1 convolution of its centre weights
        x = torch.randn(shape)
        k = tuple(s // 2 for s in conv.kernel_size)
        centre_weight = conv.weight[(slice(None), slice(None)) + tuple(slice(c, c + 1) for c in k)]
        ones = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}
        same = ones[len(k)](x, centre_weight, conv.bias, stride=conv.stride)
        torch.testing.assert_close(conv(x), same, rtol=1e-5, atol=1e-6)


def test_no_geometry_without_zero_padding_or_a_tensor():
    assert conv_geometry(nn.Conv2d(4, 4, 3), (torch.zeros(1, 4, 8, 8),)) is None  # no padding
    assert conv_geometry(nn.Conv2d(4, 4, 3, padding=1), (torch.zeros(1, 4, 64, 64),)) == {
        "input": [64, 64], "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
        "dilation": [1, 1], "padding_share": 0.0207, "centre_tap": False,
    }  # fmt: skip
    reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
    assert conv_geometry(reflect, (torch.zeros(1, 4, 1, 1),)) is None  # reads data, not zeros
    assert conv_geometry(nn.Conv2d(4, 4, 3, padding=1), ()) is None
    # DCGAN's generator: a transposed convolution's padding crops its output, reads no zeros
    transposed = nn.ConvTranspose2d(8, 4, 4, stride=1, padding=0)
    assert conv_geometry(transposed, (torch.zeros(2, 8, 1, 1),)) is None
    assert conv_geometry(nn.ConvTranspose2d(8, 4, 4, 2, 1), (torch.zeros(2, 8, 4, 4),)) is None
    assert conv_geometry(nn.Conv2d(4, 4, 5), (torch.zeros(1, 4, 2, 2),)) is None  # no output


class LastStage(nn.Module):
    """A ResNet's last stage on 1x1 maps: its 3x3 convolutions are their centre taps."""

    def __init__(self, channels=256):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


def _nodes(tree):
    nodes, stack = {}, [tree]
    while stack:
        node = stack.pop()
        nodes[node["path"]] = node
        stack.extend(node["children"])
    return nodes


def test_convolutions_on_1x1_maps_are_told_to_be_their_centre_tap_with_a_saving():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 256, 1), LastStage())
    x = torch.randn(32, 8, 1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    session = profile(step, steps=3, model=model)
    nodes = _nodes(session["tree"])
    assert nodes["1.conv1"]["conv"] == {
        "input": [1, 1], "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
        "dilation": [1, 1], "padding_share": 0.8889, "centre_tap": True,
    }  # fmt: skip
    assert nodes["0"]["conv"] == {"pointwise": True}  # a 1x1 convolution reads no padding
    # every module node carries its parameter count, counted once (a stack's identity)
    assert nodes["0"]["params"] == 8 * 256 + 256
    assert nodes["1"]["params"] == nodes["1.conv1"]["params"] + nodes["1.conv2"]["params"]
    assert "params" not in session["tree"]  # (the step is no module)
    padded = [a for a in session["advice"] if a.get("cause") == "padded-convolutions"]
    assert padded and "maps smaller than their kernels" in padded[0]["title"]
    assert padded[0]["estimated_saving_ms"] > 0
    # (the advice reads the mean, as the tree adds up: with 3 steps one slow step lifts it
    # past the median, which a fresh clone's CI saw: 10.3 ms of saving against 9.99)
    centre_ms = sum(nodes[p]["total_ms"]["mean"] for p in ("1.conv1", "1.conv2"))
    assert sum(a["estimated_saving_ms"] for a in padded) < centre_ms
    assert "same function" in " ".join(padded[0]["evidence"])
    assert not any(a.get("cause") == "channels_last" and "dominates" in a["title"]
                   for a in session["advice"])  # fmt: skip


def test_a_2x2_map_gets_the_diagnosis_but_no_saving():
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 3, stride=2, padding=1, bias=False)
    x = torch.randn(32, 256, 2, 2)
    session = profile(lambda: conv(x).square().mean().backward(), steps=3, model=conv)
    padded = [a for a in session["advice"] if a.get("cause") == "padded-convolutions"]
    assert padded and padded[0]["estimated_saving_ms"] is None  # no same-function swap there
    assert "56% of its multiply-adds on padding" in " ".join(padded[0]["evidence"])


def test_autocast_entered_inside_the_models_forward_is_seen():
    """accelerate (the Hugging Face Trainer's bf16=True) wraps the model's forward in autocast:
    the outermost module's pre-hook runs before it is on; its children's run inside it."""

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(8, 8)

        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.inner(x).float()

    model = Wrapped()
    x = torch.randn(4, 8)
    session = profile(lambda: model(x).sum().backward(), steps=2, model=model)
    knobs = session["environment"]["knobs"]
    assert knobs["autocast"] is True and knobs["autocast_dtype"] == "bfloat16"
    assert session["environment"]["bf16_native"] in (True, False, None)


def test_depthwise_convolutions_carry_their_groups_and_raise_channels_last_s_cpu_bound():
    """torchvision's mobilenet_v3_small: told up to 215 ms by channels_last's usual CPU bound,
    measured 585 ms saved; NCHW depthwise (and 1x1) convolutions take a slow CPU path."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32),
                          nn.Conv2d(32, 64, 1), nn.AdaptiveAvgPool2d(1))  # fmt: skip
    x = torch.randn(8, 32, 28, 28)

    def step():
        model(x).square().mean().backward()

    session = profile(step, steps=4, model=model)
    nodes = _nodes(session["tree"])
    assert nodes["0"]["conv"]["groups"] == 32 and nodes["0"]["conv"]["in_channels"] == 32
    assert nodes["2"]["conv"] == {"pointwise": True}  # (1x1: no padding, one group)
    (layout,) = [a for a in session["advice"] if a.get("cause") == "channels_last"]
    grouped = [e for e in layout["evidence"] if "depthwise" in e]
    assert grouped and grouped[0].startswith("up to 2.5x on its 1 depthwise convolution (")
    assert any(e.startswith("up to 2x on its 1 1x1 convolution (") for e in layout["evidence"])
    # the bound: 1.3x on all the layout's modules, plus more on the depthwise and 1x1 ones
    # (the same session read with those facts left out: the usual bound alone)
    plain = copy.deepcopy(session)
    for node in _nodes(plain["tree"]).values():
        node.pop("conv", None)
    (usual,) = [a for a in advise(plain) if a.cause == "channels_last"]
    assert not any("depthwise" in e for e in usual.evidence)
    assert layout["saving_range_ms"][1] > usual.saving_range_ms[1] * 1.5


def test_each_kind_of_convolution_gets_its_own_bound():
    """Forward + backward in channels_last on a CPU (suite fused, conv_layouts): depthwise up to
    2.5x, ResNeXt-style groups of several channels up to 2x, 1x1 up to 2x, dense 3x3 the usual
    1.3x."""
    from torchdoctor.analyze.advice.base import Advice
    from torchdoctor.analyze.advice.knobs_layout import layout_kinds_bound

    def raised(facts):
        conv = {"type": "Conv2d", "path": "c", "total_ms": {"mean": 24.0}, "children": [],
                **({"conv": facts} if facts is not None else {})}  # fmt: skip
        item = Advice("engine-knobs", "t", saving_range_ms=[0.0, 5.0], evidence=["c", "1.3x"])
        layout_kinds_bound(item, {"tree": {"children": [conv]}}, 1.0)
        return round(item.saving_range_ms[1] - 5.0, 2), item.evidence[2:3]

    usual = 1 - 1 / 1.3
    depthwise, said = raised({"groups": 32, "in_channels": 32})
    assert depthwise == round(24.0 * ((1 - 1 / 2.5) - usual), 2) and "depthwise" in said[0]
    grouped, said = raised({"groups": 32, "in_channels": 128})
    assert grouped == round(24.0 * ((1 - 1 / 2.0) - usual), 2) and "grouped" in said[0]
    pointwise, said = raised({"pointwise": True})
    assert pointwise == grouped and "1x1" in said[0]
    assert raised({"padding_share": 0.2}) == (0.0, []) and raised(None) == (0.0, [])
