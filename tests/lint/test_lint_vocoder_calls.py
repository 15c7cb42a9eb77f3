"""A vocoder is a module (corpus 43: Glow-TTS's synthesis loop runs the acoustic model's
no_grad infer and then the vocoder with autograd on)."""

from __future__ import annotations

from torchdoctor.lint import lint_source

SRC = (
    "import torch\n\nclass TTS(torch.nn.Module):\n    @torch.no_grad()\n"
    "    def infer(self, x):\n        return self.enc(x)\n\n"
    "def synthesize(model, texts, vocoder):\n    model.eval()\n    audios = []\n"
    "    for t in texts:\n        w = model.infer(t)\n{body}    return audios\n"
)


def test_vocoder_run_with_autograd_on_in_an_inference_loop() -> None:
    src = SRC.format(body="        audios.append(vocoder(w))\n")
    assert ("TD602", 11) in [(f.code, f.line) for f in lint_source(src)]


def test_vocoder_run_under_no_grad_is_left_alone() -> None:
    body = "        with torch.no_grad():\n            audios.append(vocoder(w))\n"
    assert [f.code for f in lint_source(SRC.format(body=body))] == []
