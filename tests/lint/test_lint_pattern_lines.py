"""A finding whose pattern spans several statements says which lines (``pattern_lines``): TD507,
hand-written attention, from its scores ``q @ k^T`` to the product with the values, so a profile
can add up the time of all of them (minGPT: the softmax line alone was a quarter of it)."""

import textwrap

from torchdoctor.lint import Finding
from torchdoctor.lint.runner import lint_source

MINGPT = textwrap.dedent(
    """
    import math
    import torch.nn.functional as F

    def attend(self, q, k, v, T):
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float('-inf'))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v
        return y
    """
)


def _td507(text):
    return [f for f in lint_source(text, "m.py") if f.code == "TD507"]


def test_hand_written_attention_spans_its_scores_to_its_values_product():
    (finding,) = _td507(MINGPT)
    assert finding.line == 8  # reported on the softmax
    assert finding.pattern_lines == (6, 10)  # scores line ... att @ v
    assert finding.to_dict()["pattern_lines"] == [6, 10]


def test_one_line_attention_has_no_span_and_the_dict_stays_as_before():
    (finding,) = _td507("import torch\ndef f(q, k, v):\n    return torch.softmax(q @ k.mT, -1) @ v\n")
    assert finding.pattern_lines is None
    assert "pattern_lines" not in finding.to_dict()


def test_pattern_lines_round_trip_through_the_session_dict():
    (finding,) = _td507(MINGPT)
    again = Finding.from_dict(finding.to_dict())
    assert again == finding and again.pattern_lines == (6, 10)


def test_the_span_starts_at_the_scores_of_its_own_branch():
    """open_clip's Attention: a scaled-cosine branch assigns ``attn`` first, the hand-written
    fallback after SDPA's branch assigns it again; the span ran from the first branch (14)
    through the SDPA call (22) to the fallback (30), and the profile charged the SDPA call's
    measured time to the fallback's finding."""
    source = textwrap.dedent(
        """
        import torch.nn.functional as F

        def attend(self, q, k, v):
            if self.logit_scale is not None:
                attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
                attn = attn.softmax(dim=-1)
                x = attn @ v
            else:
                if self.use_sdpa:
                    x = F.scaled_dot_product_attention(q, k, v)
                else:
                    attn = q @ k.transpose(-1, -2)
                    attn = attn.softmax(dim=-1)
                    x = attn @ v
            return x
        """
    )
    spans = sorted(f.pattern_lines for f in _td507(source))
    assert spans == [(13, 15)]  # (its own three lines; was (6, 15))
