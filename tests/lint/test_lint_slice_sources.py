"""TD307 on where a sliced value comes from: a NumPy attribute of a plain class, the outputs of
one autograd.grad call per iteration, a tuple a model's call returns (corpus 43)."""

from __future__ import annotations

from torchdoctor.lint import lint_source


def codes(src: str) -> list[tuple[str, int]]:
    return [(f.code, f.line) for f in lint_source(src)]


def test_numpy_attribute_of_a_plain_class_is_not_tracked() -> None:
    # AlphaZero's board: `g = self.grid` is a NumPy array the class makes, not a parameter
    src = (
        "import numpy as np\nimport torch\n\nclass Board:\n    def __init__(self):\n"
        "        self.grid = np.zeros((6, 7), dtype=np.int8)\n\n    def winner(self):\n"
        "        g = self.grid\n        for r in range(6 * 2):\n"
        "            s = g[r, 0:4].sum()\n            if abs(s) == 4:\n                return 1\n"
        "        return 0\n"
    )
    assert codes(src) == []


def test_parameter_attribute_is_still_tracked() -> None:
    src = (
        "import torch\nimport torch.nn as nn\n\nclass Scan(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.decay = nn.Parameter(torch.randn(4, 64))\n\n    def forward(self, x):\n"
        "        a = self.decay\n        h = 0\n        for t in range(x.shape[1]):\n"
        "            h = a[:, t] * h + x[:, t]\n        return h\n"
    )
    assert ("TD307", 13) in codes(src)


def test_slice_taken_for_one_autograd_grad_per_iteration_is_left_alone() -> None:
    # FFJORD's divergence_bf: each iteration is its own backward, nothing sums across them
    src = (
        "import torch\n\ndef divergence_bf(dx, y):\n    sum_diag = 0.0\n"
        "    for i in range(y.shape[1]):\n"
        "        sum_diag += torch.autograd.grad(dx[:, i].sum(), y, create_graph=True)[0][:, i]\n"
        "    return sum_diag\n\nclass F(torch.nn.Module):\n    def forward(self, t, y):\n"
        "        dx = self.net(y)\n        return dx, divergence_bf(dx, y)\n"
    )
    assert codes(src) == []


def test_slice_summed_into_one_backward_is_still_reported() -> None:
    src = (
        "import torch\n\nclass F(torch.nn.Module):\n    def forward(self, y):\n"
        "        dx = self.net(y)\n        total = 0.0\n        for i in range(y.shape[1]):\n"
        "            total = total + dx[:, i].pow(2).sum()\n"
        "        return torch.autograd.grad(total, y)[0]\n"
    )
    assert ("TD307", 8) in codes(src)


def test_mask_unpacked_from_a_model_call_is_tracked() -> None:
    # slot attention's alpha masks: `recon, masks = model(image)`, sliced per slot in the step
    src = (
        "import torch\n\ndef train(model, loader, opt):\n    for image in loader:\n"
        "        recon, recons, masks, slots = model(image)\n"
        "        loss = (recon - image).pow(2).mean()\n        ent = 0.0\n"
        "        for k in range(masks.shape[1]):\n            m_k = masks[:, k]\n"
        "            ent = ent - (m_k * torch.log(m_k + 1e-8)).mean()\n"
        "        (loss + ent).backward()\n        opt.step()\n"
    )
    assert ("TD307", 9) in codes(src)


def test_mask_unpacked_from_a_batch_is_not_tracked() -> None:
    src = (
        "import torch\n\ndef train(model, loader, opt):\n    for batch in loader:\n"
        "        image, masks = batch\n        recon = model(image)\n        loss = 0.0\n"
        "        for k in range(masks.shape[1]):\n"
        "            loss = loss + (recon * masks[:, k]).mean()\n"
        "        loss.backward()\n        opt.step()\n"
    )
    assert codes(src) == []
