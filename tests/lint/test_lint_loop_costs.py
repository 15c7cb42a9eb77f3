"""TD206, TD305, TD306, TD710: what each reports, and where it stays out of other rules' way."""

from __future__ import annotations

from torchdoctor.lint import lint_source


def found(src: str, select: list[str] | None = None) -> list[tuple[int, str]]:
    return [(f.line, f.code) for f in lint_source(src, select=select)]


def test_td305_names_the_cure_and_the_measured_ratio() -> None:
    ema = (
        "import torch\ndef ema(e, m, d):\n"
        "    for pe, p in zip(e.parameters(), m.parameters()):\n"
        "        pe.mul_(d).add_(p, alpha=1 - d)\n"
    )
    (finding,) = lint_source(ema)
    assert finding.code == "TD305" and finding.line == 3
    assert "_foreach_lerp_" in finding.message and "AveragedModel" in finding.message
    assert "CPU" in finding.message and "torch 2.13" in finding.message
    sgd = "import torch\ndef sgd(m, lr):\n    for p in m.parameters():\n        p.data -= lr * p.grad\n"
    (finding,) = lint_source(sgd)
    assert "_foreach_add_" in finding.message


def test_td305_leaves_reads_and_initialisation_alone() -> None:
    src = (
        "import torch\ndef n(m):\n    for p in m.parameters():\n        p.requires_grad_(False)\n"
        "def init_weights(m):\n    for p in m.parameters():\n        p.data.mul_(0.1)\n"
    )
    assert found(src) == []


def test_td306_and_td604_never_share_a_loop() -> None:
    decode = (
        "import torch\ndef gen(model, idx):\n    for _ in range(9):\n"
        "        y = model(idx)\n        idx = torch.cat((idx, y[:, -1:]), dim=1)\n"
    )
    assert found(decode) == [(4, "TD604")]
    gather = (
        "import torch\ndef gather(model, loader):\n    out = torch.empty(0)\n"
        "    for x in loader:\n        out = torch.cat([out, model(x)])\n    return out\n"
    )
    assert found(gather) == [(5, "TD306")]


def test_td710_resolves_aliases_and_skips_periodic_collections() -> None:
    src = (
        "from gc import collect as sweep\n"
        "def train(model, loader, opt):\n"
        "    for i, x in enumerate(loader):\n"
        "        model(x).sum().backward()\n        opt.step()\n        sweep()\n"
        "        if i % 100 == 0:\n            sweep()\n"
    )
    assert found(src) == [(6, "TD710")]


def test_td206_reports_the_read_once_and_defers_to_td201_in_a_training_loop() -> None:
    solver = (
        "import torch\ndef solve(S, x, tol):\n    u = torch.ones_like(x)\n    err = 1.0\n"
        "    while err > tol:\n        v = u / (S @ u)\n"
        "        err = (v - u).abs().max().item()\n        u = v\n    return u\n"
    )
    assert found(solver) == [(7, "TD206")]
    training = (
        "import torch\ndef fit(model, x, opt, tol):\n    for it in range(1000):\n"
        "        loss = model(x).sum()\n        loss.backward()\n        opt.step()\n"
        "        if loss.item() < tol:\n            break\n"
    )
    assert found(training) == [(7, "TD201")]
    assert found(training, select=["TD206"]) == []


def test_td206_skips_a_periodic_test() -> None:
    src = (
        "import torch\ndef solve(S, u, tol):\n    for it in range(1000):\n        v = u / (S @ u)\n"
        "        if it % 10 == 0 and (v - u).abs().max() < tol:\n            break\n        u = v\n"
    )
    assert found(src) == []


def test_td604_says_where_a_cache_stops_serving_when_the_loop_crops_a_window() -> None:
    """nanoGPT's generate keeps the last block_size tokens: a KV cache serves until the window
    is full, and past it absolute positions shift, which the message says."""
    cropped = (
        "import torch\ndef gen(self, idx, n, block):\n    for _ in range(n):\n"
        "        cond = idx if idx.size(1) <= block else idx[:, -block:]\n"
        "        logits, _ = self(cond)\n"
        "        idx = torch.cat((idx, logits[:, -1:].argmax(-1)), dim=1)\n"
    )
    [finding] = [f for f in lint_source(cropped) if f.code == "TD604"]
    assert "`idx[:, -block:]`" in finding.message and "until the window is full" in finding.message
    plain = cropped.replace("idx if idx.size(1) <= block else idx[:, -block:]", "idx")
    [finding] = [f for f in lint_source(plain) if f.code == "TD604"]
    assert "window" not in finding.message
    newest = plain.replace("        logits, _", "        prev = idx[:, -1:]\n        logits, _")
    [finding] = [f for f in lint_source(newest) if f.code == "TD604"]
    assert "window" not in finding.message  # (the newest token read out is no crop)


def test_a_step_function_is_said_to_run_once_a_step_not_every_step_of_itself() -> None:
    """Lightning's training_step got "every step of this training step"."""
    step = (
        "import torch\nclass M:\n    def training_step(self, batch, i):\n"
        "        loss = self.net(batch.cuda()).mean()\n        print(loss.item())\n"
        "        return loss\n"
    )
    [finding] = [f for f in lint_source(step) if f.code == "TD201"]
    assert "at every training step (the function runs once a step)" in finding.message
    assert "every step of this training step" not in finding.message
    loop = "import torch\nfor x in loader:\n    model(x).sum().backward()\n    print(x.sum().item())\n"
    [finding] = [f for f in lint_source(loop) if f.code == "TD201"]
    assert "every step of this training loop" in finding.message


def test_a_host_read_that_decides_a_branch_is_not_told_to_keep_a_metric() -> None:
    src = (
        "import math\nimport torch\nfor x in loader:\n    loss = model(x.cuda()).mean()\n"
        "    loss.backward()\n    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "    if not math.isfinite(float(gnorm)):\n        continue\n    opt.step()\n"
        "    if loss.item() < 0.01:\n        lr = 0.1\n    total = loss.item()\n"
    )
    findings = {f.line: f.message for f in lint_source(src) if f.code == "TD201"}
    assert "GradScaler" in findings[7] and "LazyMetrics" not in findings[7]
    assert "torch.where" in findings[10]
    assert "LazyMetrics" in findings[12]


def test_td103_names_cholesky_factor_for_factors_and_solves_only() -> None:
    src = (
        "import torch\ndef f(covs):\n    out = []\n    for b in range(covs.shape[0]):\n"
        "        out.append(torch.linalg.slogdet(covs[b])[1])\n"
        "    for b in range(covs.shape[0]):\n        out.append(torch.linalg.cholesky(covs[b]))\n"
        "    return out\n"
    )
    messages = {f.line: f.message for f in lint_source(src) if f.code == "TD103"}
    assert "cholesky_factor" not in messages[5]  # (a determinant: the batched call is the cure)
    assert "torchdoctor.ops.cholesky_factor" in messages[7]


def test_td201_in_code_that_moves_nothing_to_cuda_does_not_claim_a_sync_now() -> None:
    cpu = "import torch\nfor x in loader:\n    model(x).sum().backward()\n    h.append(x.sum().item())\n"
    [finding] = [f for f in lint_source(cpu) if f.code == "TD201"]
    assert "a host-device sync on a GPU run" in finding.message
    assert "forces" not in finding.message
    gpu = cpu.replace("model(x)", "model(x.cuda())")
    [finding] = [f for f in lint_source(gpu) if f.code == "TD201"]
    assert "forces a host-device sync" in finding.message


def test_td305_on_a_state_dict_ema_names_the_lerp_cure() -> None:
    """YOLOv5's ModelEMA updates its state_dict entry by entry with the model's by key."""
    src = (
        "import torch\nclass ModelEMA:\n    def update(self, model):\n        d = self.decay()\n"
        "        msd = model.state_dict()\n        for k, v in self.ema.state_dict().items():\n"
        "            if v.dtype.is_floating_point:\n                v *= d\n"
        "                v += (1 - d) * msd[k].detach()\n"
    )
    (finding,) = lint_source(src)
    assert finding.code == "TD305" and "_foreach_lerp_" in finding.message


def test_td201_counts_torch_accelerator_as_a_device() -> None:
    """pytorch/examples' VAE moves its model and data to torch.accelerator's device."""
    src = (
        "import torch\ndevice = torch.accelerator.current_accelerator()\n"
        "for x in loader:\n    model(x.to(device)).sum().backward()\n    h.append(x.sum().item())\n"
    )
    [finding] = [f for f in lint_source(src) if f.code == "TD201"]
    assert "forces a host-device sync" in finding.message
