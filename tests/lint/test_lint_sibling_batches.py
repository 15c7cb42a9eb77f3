"""TD304 over a loop whose range counts one output of a call and whose body walks another
output of the same call (corpus 43: Glow-TTS's per-utterance duration term)."""

from __future__ import annotations

from torchdoctor.lint import lint_source

HEAD = (
    "import torch\n\ndef train(model, loader, optim):\n    for x, y in loader:\n"
    "{made}        durs = []\n        for i in range(z.shape[0]):\n"
    "            durs.append(torch.sigmoid(logw_[i]).sum(-1))\n"
    "        loss = torch.stack(durs).mean()\n        loss.backward()\n        optim.step()\n"
)


def codes(src: str) -> list[tuple[str, int]]:
    return [(f.code, f.line) for f in lint_source(src)]


def test_outputs_of_one_call_share_the_batch() -> None:
    src = HEAD.format(made="        z, y_m, logw, logw_ = model(x, y)\n")
    assert ("TD304", 7) in codes(src)


def test_outputs_of_different_calls_are_left_alone() -> None:
    src = HEAD.format(made="        z = model(x, y)\n        logw_ = prior(y)\n")
    assert codes(src) == []
