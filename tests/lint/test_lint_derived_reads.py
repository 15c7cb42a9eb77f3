"""TD201 on a value derived from a model's output by methods NumPy arrays lack and a
negation (corpus 43: AlphaZero's policy entropy read with float() every step)."""

from __future__ import annotations

from torchdoctor.lint import lint_source

STEP = (
    "import torch\n\ndef train(net, loader, opt):\n    for s, pi in loader:\n"
    "        logp, v = net(s)\n        loss = -(pi * logp).sum(1).mean()\n"
    "        opt.zero_grad()\n        loss.backward()\n        opt.step()\n"
)


def codes(src: str) -> list[tuple[str, int]]:
    return [(f.code, f.line) for f in lint_source(src)]


def test_negated_entropy_of_a_model_output_read_with_float() -> None:
    src = STEP + (
        "        ent = -(logp.exp() * logp).sum(1).mean()\n"
        "        if float(ent) < 0.1:\n            print('collapsed')\n"
    )
    assert ("TD201", 11) in codes(src)


def test_log_of_a_model_output_read_with_float() -> None:
    src = STEP + "        spread = v.log().std()\n        hist.append(float(spread))\n"
    assert ("TD201", 11) in codes(src)


def test_numpy_values_are_left_alone() -> None:
    src = STEP + (
        "        p = np.asarray(probs)\n        ent = -(p * np.log(p)).sum()\n"
        "        hist.append(float(ent))\n"
    )
    assert [c for c in codes(src) if c[0] == "TD201"] == []


def test_entropy_read_every_n_steps_is_left_alone() -> None:
    src = STEP.replace("for s, pi in loader", "for i, (s, pi) in enumerate(loader)") + (
        "        ent = -(logp.exp() * logp).sum(1).mean()\n"
        "        if i % 100 == 0:\n            print(i, float(ent))\n"
    )
    assert [c for c in codes(src) if c[0] == "TD201"] == []


def test_math_log_is_no_tensor_method() -> None:
    # a helper reading `.item()` of an argument under math.log: no evidence the argument is a tensor
    src = (
        "import math\n\ndef score(arr):\n    return math.log(arr.sum().item())\n\n"
        "def train(model, loader, opt, counts):\n    for x, y in loader:\n"
        "        model(x, y).backward()\n        opt.step()\n        s = score(counts)\n"
    )
    assert lint_source(src) == []
