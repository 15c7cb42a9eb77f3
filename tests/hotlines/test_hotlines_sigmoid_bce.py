"""Binary cross-entropy of a sigmoid's output is named apart (``F.binary_cross_entropy[sigmoid]``)
even when the sigmoid is in another function, and the line is told to pass the logits to
``binary_cross_entropy_with_logits`` (pytorch/examples VAE: the decoder's last op is a sigmoid,
the loss function takes its output)."""

import torch
import torch.nn.functional as F
from torch import nn

from tests.hotlines.hotlines_helpers import lines_at, marked_line, profile


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 784)

    def forward(self, z):
        return torch.sigmoid(self.fc(z))


def loss_function(recon, x):
    return F.binary_cross_entropy(recon, x, reduction="sum")  # bce


def plain_bce(probs, x):
    return F.binary_cross_entropy(probs, x, reduction="sum")  # plain


def test_bce_of_a_sigmoid_made_elsewhere_is_told_to_take_the_logits():
    torch.manual_seed(0)
    decoder = Decoder()
    z, x = torch.randn(256, 32), torch.rand(256, 784)
    opt = torch.optim.SGD(decoder.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        loss_function(decoder(z), x).backward()
        opt.step()

    session = profile(step, steps=4, model=decoder)
    here = loss_function.__code__.co_filename
    (row,) = lines_at(session, here, marked_line(loss_function, "bce"))
    assert row["top_ops"][0]["op"] == "F.binary_cross_entropy[sigmoid]"
    advice = [a for a in session["advice"] if "binary_cross_entropy_with_logits" in a["fix"]]
    assert advice and advice[0]["estimated_saving_ms"] > 0
    assert "2.8x-3.34x" in " ".join(advice[0]["evidence"])  # the benchmarked speedup


def test_bce_of_other_probabilities_keeps_its_plain_name():
    torch.manual_seed(0)
    logits = torch.randn(256, 784, requires_grad=True)
    x = torch.rand(256, 784)

    def step():
        probs = logits.softmax(-1)  # probabilities, but no sigmoid's
        plain_bce(probs, x).backward()

    session = profile(step, steps=3)
    here = plain_bce.__code__.co_filename
    (row,) = lines_at(session, here, marked_line(plain_bce, "plain"))
    assert row["top_ops"][0]["op"] == "F.binary_cross_entropy"
    assert not any("binary_cross_entropy_with_logits" in a["fix"] for a in session["advice"])
