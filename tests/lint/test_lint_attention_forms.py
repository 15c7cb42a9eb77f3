"""TD507 says the attention's form, which sets SDPA's gain (suite 'fused' attention_layouts):
causal attention 1.42x-1.97x on a CPU, without a mask 1.15x-1.26x, channels first (a U-Net's
legacy attention, torchcfm's: told 27.6 ms saved, measured 0.88x) 0.83x-1.28x with the
transposes. The profile's cure reads "no mask" / "channels first" from the message."""

from __future__ import annotations

from pathlib import Path

from torchdoctor.lint import lint_source

SOURCE = (Path(__file__).resolve().parents[1] / "lint_fixtures" / "td5_attention_forms.py").read_text()


def _messages() -> dict[str, str]:
    lines = SOURCE.splitlines()
    out = {}
    for finding in lint_source(SOURCE, "forms.py", select=["TD507"]):
        function = next(lines[n].split("(")[0][4:] for n in range(finding.line - 1, -1, -1)
                        if lines[n].startswith("def "))  # fmt: skip
        out[function] = finding.message
    return out


def test_each_form_is_named_in_the_message():
    messages = _messages()
    assert set(messages) == {"causal", "unmasked", "legacy", "padded"}
    assert "no mask" not in messages["causal"] and "channels first" not in messages["causal"]
    assert "no mask" not in messages["padded"]  # (a padding mask added to the scores)
    assert "; no mask: SDPA gains less there" in messages["unmasked"]
    assert "no mask, and channels first" in messages["legacy"]
