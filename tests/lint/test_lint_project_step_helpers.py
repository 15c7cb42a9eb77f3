"""Host reads one call away from a training loop of another file (TD201 in a step helper)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths

LOSSES = """
    import torch

    def sequence_loss(preds, gt, valid):
        loss = sum((p - gt).abs().mean() for p in preds)
        epe = torch.sum((preds[-1] - gt) ** 2, dim=1).sqrt()
        metrics = {
            "epe": epe.mean().item(),
            "1px": (epe < 1).float().mean().item(),
        }
        return loss, metrics

    def logged_loss(preds, gt, step):
        loss = torch.abs(preds - gt).mean()
        if step % 100:
            return loss
        print(loss.item())
        return loss

    def periodic_metrics(preds, gt):
        return torch.abs(preds - gt).mean().item()

    def elapsed(clock, start):
        return clock.now().item() - start

    def validate(model, batches):
        return sum(torch.abs(model(x) - y).mean().item() for x, y in batches)

    def save_embeds(encoder, path):
        torch.save({"w": encoder.weight.detach().cpu()}, path)

    def config_metric(loss):
        return torch.abs(loss).item()
"""

TRAIN = """
    import torch
    from losses import (config_metric, elapsed, logged_loss, periodic_metrics, save_embeds,
                        sequence_loss, validate)

    def train(model, loader, val, opt, scheduler, clock):
        for epoch in range(10):
            for step, (x, y, v) in enumerate(loader):
                preds = model(x.cuda())
                loss, metrics = sequence_loss(preds, y.cuda(), v.cuda())
                loss = loss + logged_loss(preds[-1], y.cuda(), step)
                loss.backward()
                opt.step()
                if step % 100 == 0:
                    print(periodic_metrics(preds[-1], y.cuda()))
                elapsed(clock, 0.0)
                save_embeds(model.embed, "latest.bin")
            print(validate(model, val))
            scheduler.step()

    def check_configs(model, x, opt):
        for flag in [True, False]:
            loss = model(x.cuda(), flag).sum()
            loss.backward()
            opt.step()
            print(config_metric(loss))
"""


def test_a_loss_helpers_metric_reads_are_found_in_its_file(tmp_path: Path) -> None:
    """RAFT's sequence_loss returns a metrics dict of `.item()` reads, called by the training
    loop of train.py every step. Reads the loop makes only every 100 steps, reads behind an
    early return on the step, a read of no tensor, an evaluation's reads (once an epoch, from
    a loop that steps only the scheduler), a checkpoint's copies and a test's loop over
    configurations stay silent."""
    (tmp_path / "losses.py").write_text(textwrap.dedent(LOSSES))
    (tmp_path / "train.py").write_text(textwrap.dedent(TRAIN))
    found = [(Path(f.path).name, f.line, f.code) for f in lint_paths([tmp_path], select=["TD201"])]
    assert found == [("losses.py", 8, "TD201"), ("losses.py", 9, "TD201")]
    message = lint_paths([tmp_path], select=["TD201"])[0].message
    assert "`sequence_loss` (called at train.py:10, every training step)" in message


ROLLOUT_LOSSES = """
    import torch

    def weighted_mse(pred, target, lat):
        lat_w = torch.cos(torch.deg2rad(lat.double()))
        return ((pred - target) ** 2 * lat_w.float()).mean()

    def val_rmse(pred, target, lat):
        return ((pred - target) ** 2 * lat.double()).mean().sqrt()
"""

ROLLOUT_TRAIN = """
    from losses import val_rmse, weighted_mse

    def train(model, loader, val_loader, lat, opt, n_roll):
        for x, ys in loader:
            x, ys = x.cuda(), ys.cuda()
            loss = 0.0
            for k in range(n_roll):
                x = model(x)
                loss = loss + weighted_mse(x, ys[:, k], lat)
            loss.backward()
            opt.step()
            for vx, vy in val_loader:
                print(val_rmse(model(vx.cuda()), vy.cuda(), lat))
"""


def test_a_loss_called_in_a_rollout_loop_inside_the_training_loop(tmp_path: Path) -> None:
    """GraphCast's multi-step rollout: the loss is called in an inner `for k in range(n_roll)`
    loop of the training step, so it runs every step (n_roll times). A helper called only in
    a nested loop over a validation loader (a step loop of its own, which does not train)
    stays silent."""
    (tmp_path / "losses.py").write_text(textwrap.dedent(ROLLOUT_LOSSES))
    (tmp_path / "train.py").write_text(textwrap.dedent(ROLLOUT_TRAIN))
    found = [(Path(f.path).name, f.line, f.code) for f in lint_paths([tmp_path], select=["TD505"])]
    assert found == [("losses.py", 5, "TD505")]


def test_a_library_call_is_no_call_of_a_project_function_of_the_same_name(tmp_path: Path) -> None:
    """torch's own `_refs.allclose` reads `.item()`; a test's training loop calls
    `torch.allclose` (the library's op) in a nested loop: that is no call of the project's
    `allclose`, and a plain `allclose(...)` imported from the project still is."""
    (tmp_path / "refs.py").write_text(textwrap.dedent("""
        import torch

        def allclose(a, b):
            return bool(torch.all(torch.isclose(a, b)).item())
    """))
    train = """
        import torch

        def check(model, local, inp, opt):
            for _ in range(3):
                model(inp).sum().backward()
                opt.step()
                for p, q in zip(model.parameters(), local.parameters()):
                    assert torch.allclose(p.grad, q.grad)
    """
    (tmp_path / "test_ddp.py").write_text(textwrap.dedent(train))
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD201"])]
    assert ("refs.py", 5) not in found
    (tmp_path / "test_ddp.py").write_text(textwrap.dedent(train).replace(
        "import torch\n", "import torch\nfrom refs import allclose\n").replace("torch.allclose", "allclose"))
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD201"])]
    assert ("refs.py", 5) in found


MEMORY_MODEL = """
    import torch

    def last_message(nodes, msgs):
        uniq = torch.unique(nodes)
        return uniq, msgs[:len(uniq)]

    def dedupe(nodes):
        return torch.unique(nodes)

    class TGN(torch.nn.Module):
        def update_memory(self, nodes, msgs):
            uniq, agg = last_message(nodes, msgs)
            self.memory[uniq] = agg.detach()

        def report(self, nodes):
            return dedupe(nodes)
"""

MEMORY_TRAIN = """
    import torch
    from model import TGN

    def main(loader, opt):
        model = TGN().cuda()
        for nodes, msgs in loader:
            loss = model(nodes.cuda()).sum()
            loss.backward()
            opt.step()
            model.update_memory(nodes.cuda(), msgs.cuda())
        print(model.report(torch.arange(5).cuda()))
"""


def test_a_helper_of_a_method_a_step_loop_calls_on_its_model(tmp_path: Path) -> None:
    """TGN's ``model.update_memory(...)`` every step runs the module-level ``last_message``,
    whose ``torch.unique`` waits for the GPU; ``dedupe`` runs in a method called once."""
    (tmp_path / "model.py").write_text(textwrap.dedent(MEMORY_MODEL))
    (tmp_path / "train.py").write_text(textwrap.dedent(MEMORY_TRAIN))
    found = lint_paths([tmp_path], select=["TD207"])
    assert [(Path(f.path).name, f.line) for f in found] == [("model.py", 5)]
    assert "called by `TGN.update_memory`" in found[0].message


def test_a_helper_two_scripts_each_define_names_its_own_files_loop(tmp_path: Path) -> None:
    """yanx27/Pointnet_Pointnet2_pytorch: train_partseg.py and test_partseg.py each define
    to_categorical and call it in their own loop; each finding names its own file's call."""
    helper = (
        "import torch\n"
        "def to_categorical(y, n):\n"
        "    new_y = torch.eye(n)[y.cpu().numpy(),]\n"
        "    return new_y.cuda()\n"
    )
    test = helper + "def test(model, loader):\n    for x, y in loader:\n        model(x, to_categorical(y, 16))\n"
    train = helper + (
        "def train(model, loader, opt):\n    for x, y in loader:\n"
        "        model(x, to_categorical(y, 16)).sum().backward()\n        opt.step()\n"
    )
    (tmp_path / "test_partseg.py").write_text(test)
    (tmp_path / "train_partseg.py").write_text(train)
    found = {Path(f.path).name: f.message for f in lint_paths([tmp_path], select=["TD204"])}
    assert "called in a loop at test_partseg.py:7" in found["test_partseg.py"]
    assert "called in a loop at train_partseg.py:7" in found["train_partseg.py"]
