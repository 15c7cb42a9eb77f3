"""Attention that fused SDPA cannot compute is not told to use it (collect/attention_form.py).

Found on x-transformers' train_copy.py run unmodified: its ``cog_signed`` attention (abs of
the scores, the weights multiplied by their signs after the softmax) was told "use fused
attention (SDPA)". The statements that ran are read from the source; branches that did not
run (no torch calls on their lines) do not count.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from hotlines_helpers import marked_line, profile

from torchdoctor.collect.attention_form import attention_forms


def _forms(tmp_path: Path, source: str, ran: list[int], softmax: int) -> list[dict]:
    file = tmp_path / f"attn{len(list(tmp_path.iterdir()))}.py"  # (linecache: a new name)
    file.write_text(textwrap.dedent(source))
    rows = [
        {"file": str(file), "line": n, "function_line": 1, "owner": "blocks.0.attn",
         "top_ops": [{"op": "F.softmax" if n == softmax else "Tensor.mul"}]}
        for n in ran
    ]  # fmt: skip
    return attention_forms(rows)


def _blockers(forms: list[dict]) -> list[tuple[int, str]]:
    return [(b["line"], b["what"]) for f in forms for b in f["blockers"]]


COG = """\
def forward(self, q, k, v, mask):
    sim = q @ k.transpose(-2, -1) * self.scale
    if self.cog:
        sign = sim.sign()
        sim = sim.abs()
    sim = sim.masked_fill(~mask, -1e9)
    attn = self.attn_fn(sim)
    attn = self.dropout(attn)
    if self.cog:
        attn = attn * sign
    attn = attn.type(q.dtype)
    return attn @ v
"""


def test_cog_signed_attention_names_the_statements_that_ran(tmp_path):
    ran_cog = [2, 4, 5, 6, 7, 8, 10, 11, 12]
    assert _blockers(_forms(tmp_path, COG, ran_cog, softmax=7)) == [
        (5, "`abs()` of the scores"),
        (10, "the weights multiplied after the softmax"),
    ]
    # the same function with its cog branches not taken (no torch calls there): SDPA's form
    assert _forms(tmp_path, COG, [2, 6, 7, 8, 11, 12], softmax=7) == []


def test_the_forms_sdpa_computes_have_no_blockers(tmp_path):
    # nanoGPT's: a scale, a causal mask filled in, softmax, dropout, product; the scores name
    # is the weights name too
    nanogpt = """\
    def forward(self, q, k, v, T):
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float('-inf'))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v
        return y
    """
    assert _forms(tmp_path, nanogpt, [2, 3, 4, 5, 6], softmax=4) == []
    # an additive bias and mask, a float32 softmax cast back, torch.where masking
    biased = """\
    def forward(self, q, k, v, bias, mask):
        scores = torch.einsum('bhid,bhjd->bhij', q, k) / self.temperature
        scores = scores + bias
        scores = torch.where(mask, scores, -1e4)
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        weights = F.dropout(weights, p=0.1, training=self.training)
        return torch.einsum('bhij,bhjd->bhid', weights, v)
    """
    assert _forms(tmp_path, biased, [2, 3, 4, 5, 6, 7], softmax=5) == []


def test_other_changes_sdpa_cannot_make(tmp_path):
    source = """\
    def forward(self, q, k, v):
        x = self.norm(q)
        sim = einsum('b h i d, b h j d -> b h i j', q, k)
        sim = sim + self.talking_heads(sim)
        sim = softclamp(sim, 50.)
        sim = cat((self.sink, sim), dim=-1)
        attn = sim.softmax(dim=-1)
        attn = l1norm(attn)
        attn = attn[..., 1:]
        attn = attn * 2.0
        out = einsum('b h i j, b h j d -> b h i d', attn, v)
        out = out * self.gate(x)
        return out
    """
    assert _blockers(_forms(tmp_path, source, list(range(2, 14)), softmax=7)) == [
        (4, "a term computed from the scores combined with them"),
        (5, "`softclamp()` of the scores"),
        (6, "`cat()` of the scores"),
        (8, "`l1norm()` of the weights"),
        (9, "the weights sliced after the softmax (an attention sink)"),
    ]  # (a constant factor, and what follows the product with the values, do not count)


def test_a_name_reused_before_the_scores_are_made_is_not_the_scores(tmp_path):
    source = """\
    def forward(self, x, k, v):
        q = x.abs()
        q = self.to_q(q)
        q = q @ k.transpose(-2, -1)
        q = q.softmax(-1)
        return q @ v
    """
    assert _forms(tmp_path, source, [2, 3, 4, 5, 6], softmax=5) == []


class CogAttention(torch.nn.Module):
    """A single-head attention whose weights carry the scores' signs (x-transformers' cog)."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.cog = True

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        sim = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
        if self.cog:
            sign = sim.sign()
            sim = sim.abs()  # abs
        attn = sim.softmax(dim=-1)
        if self.cog:
            attn = attn * sign  # signs
        return attn @ v


def test_a_profiled_cog_attention_is_not_told_to_use_sdpa():
    model = CogAttention()
    x = torch.randn(4, 128, 32)
    session = profile(lambda: model(x).sum().backward(), steps=3)
    forms = session["hot_lines"]["attention_forms"]
    file = CogAttention.forward.__code__.co_filename
    assert [b["line"] for b in forms[0]["blockers"]] == [
        marked_line(CogAttention.forward, "abs"),
        marked_line(CogAttention.forward, "signs"),
    ]
    assert forms[0]["function"].endswith(f":{CogAttention.forward.__code__.co_firstlineno}")
    assert file.endswith("test_hotlines_attention_form.py")
    assert not any(a.get("cause") == "sdpa" for a in session["advice"]), [
        a["title"] for a in session["advice"]
    ]
    # the same module without its cog branches is SDPA's attention, and is told so
    model.cog = False
    session = profile(lambda: model(x).sum().backward(), steps=3)
    assert "attention_forms" not in session["hot_lines"]
    assert any(a.get("cause") == "sdpa" for a in session["advice"]), [
        a["title"] for a in session["advice"]
    ]
