"""Rules that look across the files linted together, and the precision fixes from real code."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths, lint_source


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))


def test_pin_memory_uses_the_projects_cuda_not_one_files(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "build.py": """
                from torch.utils.data import DataLoader
                def build(ds):
                    return DataLoader(ds, num_workers=4, persistent_workers=True)
            """,
            "train.py": "def step(b):\n    return b.cuda()\n",
        },
    )
    assert [f.code for f in lint_paths([tmp_path / "build.py"])] == []  # alone: no CUDA seen
    assert [f.code for f in lint_paths([tmp_path])] == ["TD402"]


SAMPLER = """
    import torch
    class Policy(torch.nn.Module):
        def conditional_sample(self, x):
            for t in self.scheduler.timesteps:
                x = self.model(x, t)
            return x
        def predict_action(self, obs):
            return self.conditional_sample(obs)
"""


def test_eval_loop_whose_callers_all_disable_grad_is_silent(tmp_path: Path) -> None:
    runner = """
        import torch
        def run(policy, obs):
            with torch.no_grad():
                return policy.predict_action(obs)
    """
    _write(tmp_path, {"policy.py": SAMPLER, "runner.py": runner})
    assert [f.code for f in lint_paths([tmp_path])] == []
    _write(tmp_path, {"other.py": "def go(policy, obs):\n    return policy.predict_action(obs)\n"})
    assert [f.code for f in lint_paths([tmp_path])] == ["TD602"]  # one caller keeps grad on


def test_an_eval_loop_calling_predict_follows_the_projects_predict(tmp_path: Path) -> None:
    """stable-baselines3's evaluate_policy calls model.predict in its loop; every predict in
    the package turns autograd off (BasePolicy.predict) or hands on to one that does
    (BaseAlgorithm.predict): no TD602. A predict of the project's own that keeps autograd on
    is still one."""
    evaluation = """
        def evaluate_policy(model, env, n):
            obs = env.reset()
            for _ in range(n):
                action, _ = model.predict(obs)
                obs, reward, done, info = env.step(action)
    """
    policies = """
        import torch as th
        class BasePolicy:
            def predict(self, obs):
                with th.no_grad():
                    return self._predict(obs)
        class BaseAlgorithm:
            def predict(self, obs):
                return self.policy.predict(obs)
    """
    _write(tmp_path, {"evaluation.py": evaluation, "policies.py": policies})
    assert [f.code for f in lint_paths([tmp_path])] == []
    _write(tmp_path, {"mine.py": "class Net:\n    def predict(self, x):\n        return self.f(x)\n"})
    assert [f.code for f in lint_paths([tmp_path])] == ["TD602"]


def test_metric_logger_update_in_another_file_is_a_sync_one_call_deep(tmp_path: Path) -> None:
    logger = """
        import torch
        class MetricLogger:
            def update(self, **kwargs):
                for k, v in kwargs.items():
                    if isinstance(v, torch.Tensor):
                        v = v.item()
    """
    engine = """
        from utils import MetricLogger
        def train_one_epoch(model, loader, optimizer):
            metric_logger = MetricLogger()
            for x in loader:
                loss = model(x)
                loss.backward()
                optimizer.step()
                metric_logger.update(loss=loss)
    """
    _write(tmp_path, {"utils.py": logger, "engine.py": engine})
    found = lint_paths([tmp_path])
    assert [(Path(f.path).name, f.line, f.code) for f in found] == [("engine.py", 9, "TD201")]
    assert "MetricLogger.update" in found[0].message


def test_python_float_named_like_a_loss_and_abort_branch_are_silent() -> None:
    src = textwrap.dedent(
        """
        import math, sys
        def train(model, loader, optimizer):
            for x in loader:
                loss = model(x)
                loss_value = loss.item()  # a real sync, reported
                if not math.isfinite(loss_value):
                    print("Loss is {}, stopping".format(loss_value))
                    print(loss)
                    sys.exit(1)
                print(f"{loss_value:.3f}")
                loss.backward()
                optimizer.step()
        """
    )
    assert [(f.line, f.code) for f in lint_source(src)] == [(6, "TD201")]


def test_guard_stored_in_a_variable_is_a_log_gate() -> None:
    src = textwrap.dedent(
        """
        def train(model, loader, optimizer, step, n):
            for x in loader:
                loss = model(x)
                loss.backward()
                optimizer.step()
                should_log = step % n == 0
                if should_log:
                    print(loss.item())
                if loss.item() > 10:
                    pass
        """
    )
    assert [(f.line, f.code) for f in lint_source(src)] == [(10, "TD201")]


def test_mask_with_a_constant_and_test_loaders_iterated_once_are_silent() -> None:
    src = textwrap.dedent(
        """
        import torch
        from torch.utils.data import DataLoader
        IMAGE_TOKEN = -200
        def split(batch_ids, seg, n):
            for ids in batch_ids:
                where = torch.where(ids == IMAGE_TOKEN)[0]
            for s in range(n):
                idx = torch.where(seg == s)[0]
            return where, idx
        def loaders(train_set, test_set):
            train_loader = DataLoader(train_set, num_workers=4)
            test_loader = DataLoader(test_set, num_workers=4)
            return train_loader, test_loader
        def fit(test_set, epochs):
            test_loader = DataLoader(test_set, num_workers=4)
            for epoch in range(epochs):
                for b in test_loader:
                    pass
        """
    )
    got = [(f.line, f.code) for f in lint_source(src)]
    assert got == [(9, "TD301"), (12, "TD403"), (16, "TD403")]


def test_barrier_inside_a_project_helper_called_every_step(tmp_path: Path) -> None:
    (tmp_path / "utils").mkdir()
    _write(
        tmp_path,
        {
            "utils/comm.py": """
                import torch.distributed as dist
                def synchronize():
                    if not dist.is_initialized():
                        return
                    dist.barrier()
                def get_rank():
                    return dist.get_rank()
            """,
            "train.py": """
                from utils.comm import get_rank, synchronize
                def train(model, loader, optimizer):
                    for x in loader:
                        model(x).sum().backward()
                        optimizer.step()
                        synchronize()
                        get_rank()
                    synchronize()
            """,
        },
    )
    found = [(Path(f.path).name, f.line, f.code) for f in lint_paths([tmp_path])]
    assert found == [("train.py", 7, "TD707")]


def test_a_helper_in_another_file_is_one_a_forward_calls_only_as_its_imports_say(tmp_path):
    """DETR: util/box_ops.py's generalized_box_iou asserts on box tensors; models/matcher.py's
    forward calls it by name, imported from util.box_ops. A function of the same name in a file
    the forward does not import from is not it (whole-package lints matched `interpolate`,
    `to`, `run` everywhere before calls were resolved through imports)."""
    (tmp_path / "util").mkdir()
    (tmp_path / "models").mkdir()
    helper = (
        "def generalized_box_iou(boxes1, boxes2):\n"
        "    assert (boxes1[:, 2:] >= boxes1[:, :2]).all()\n"
        "    return boxes1 @ boxes2.T\n"
    )
    (tmp_path / "util" / "box_ops.py").write_text(helper)
    (tmp_path / "other.py").write_text(helper)  # same name, never imported by a forward
    (tmp_path / "models" / "matcher.py").write_text(
        "import torch.nn as nn\n"
        "from util.box_ops import generalized_box_iou\n"
        "from util import box_ops\n"
        "class HungarianMatcher(nn.Module):\n"
        "    def forward(self, a, b):\n"
        "        return generalized_box_iou(a, b) + box_ops.generalized_box_iou(b, a)\n"
    )
    found = [(Path(f.path).name, f.line, f.code) for f in lint_paths([tmp_path], select=["TD205"])]
    assert found == [("box_ops.py", 2, "TD205")]
    (message,) = [f.message for f in lint_paths([tmp_path], select=["TD205"])]
    assert "called by `HungarianMatcher.forward`, matcher.py:6" in message
    assert "torch._assert_async" in message  # (an assert's own remedy)


def test_a_helper_of_a_forward_is_not_grad_free_because_forward_is_called_so_once(tmp_path):
    """recurrent_gemma's `_rnn_scan` (called from `forward`) lost its TD307 when mamba.py's
    lm.py was linted with it: its `generate` calls `self.forward(...)` under no_grad, and the
    walk up the callers took that for every call of a forward (they go through __call__)."""
    layer = """
        import torch
        class Scan(torch.nn.Module):
            def forward(self, gate, x):
                return self._scan(torch.sigmoid(gate), x * 2)
            def _scan(self, gate, x):
                h, out = 0, []
                for t in range(x.shape[1]):
                    h = gate[:, t] * h + x[:, t]
                    out.append(h)
                return torch.stack(out, 1)
    """
    lm = """
        import torch
        class LM(torch.nn.Module):
            def generate(self, x):
                with torch.no_grad():
                    return self.forward(x)
    """
    _write(tmp_path, {"layer.py": layer, "lm.py": lm})
    assert [f.code for f in lint_paths([tmp_path])] == ["TD307", "TD307"]


def test_a_method_call_is_no_call_of_a_function_of_the_same_name(tmp_path: Path) -> None:
    """`model.train()` in a training loop of one file is not a call of the function `train`
    another file defines (whose constant tensor, built once before its loop, is fine); a call
    through an imported module (`helpers.scale(x)`) in a step loop is."""
    _write(
        tmp_path,
        {
            "loop.py": """
                import torch
                def train(model, loader, optimizer):
                    weights = torch.tensor([1.0, 2.5, 4.0])
                    for x, y in loader:
                        loss = torch.nn.functional.cross_entropy(model(x), y, weight=weights)
                        loss.backward()
                        optimizer.step()
            """,
            "fit.py": """
                import helpers
                def fit(model, loader, optimizer, epochs):
                    for epoch in range(epochs):
                        model.train()
                        for x in loader:
                            model(helpers.scale(x)).sum().backward()
                            optimizer.step()
            """,
            "helpers.py": """
                import torch
                def scale(x):
                    return x * torch.tensor([0.5, 2.0])
            """,
        },
    )
    found = [(Path(f.path).name, f.line, f.code) for f in lint_paths([tmp_path], select=["TD511"])]
    assert found == [("helpers.py", 4, "TD511")]


def test_a_tensor_dataset_made_in_another_file_needs_no_workers(tmp_path: Path) -> None:
    # TD401's exemption (tensors in memory: a batch is one gather) follows the dataset into
    # the function of data.py that builds it; a Dataset class there still wants workers
    _write(
        tmp_path,
        {
            "data.py": """
                import torch
                from torch.utils.data import Dataset, TensorDataset
                def make_dataset(n):
                    return TensorDataset(torch.randn(n, 8), torch.randint(0, 2, (n,)))
                class Images(Dataset):
                    def __getitem__(self, i):
                        return torch.load(f"{i}.pt")
                def make_images():
                    return Images()
            """,
            "train.py": """
                from torch.utils.data import DataLoader
                from data import make_dataset, make_images
                tensors = DataLoader(make_dataset(1000), batch_size=32)
                images = DataLoader(make_images(), batch_size=32)
            """,
        },
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD401"])]
    assert found == [("train.py", 5)]


def test_a_helper_of_another_file_run_by_a_forwards_method_runs_per_call(tmp_path: Path) -> None:
    # NeRF's forward -> self.run -> rays.composite, which builds a literal background colour
    _write(
        tmp_path,
        {
            "rays.py": """
                import torch
                def composite(rgb, acc, bkgd=None):
                    if bkgd is None:
                        bkgd = torch.tensor([1.0, 1.0, 1.0], device=rgb.device)
                    return rgb + (1.0 - acc[..., None]) * bkgd
                def unused(rgb):
                    return rgb * torch.tensor([0.5, 0.5, 0.5])
            """,
            "nerf.py": """
                import torch.nn as nn
                from rays import composite
                class NeRF(nn.Module):
                    def run(self, x):
                        rgb, acc = self.mlp(x)
                        return composite(rgb, acc)
                    def forward(self, x):
                        return self.run(x)
            """,
        },
    )
    found = [(Path(f.path).name, f.line, f.message) for f in lint_paths([tmp_path], select=["TD511"])]
    assert [(name, line) for name, line, _ in found] == [("rays.py", 5)]
    assert "called by `NeRF.forward` (nerf.py:" in found[0][2]


def test_a_mask_in_a_loss_the_training_loop_calls_runs_every_step(tmp_path: Path) -> None:
    # TD207 follows the loop into the module-level loss it calls every step; an evaluation
    # called once an epoch (in the epoch loop, not the step loop) is not every step
    _write(
        tmp_path,
        {
            "losses.py": """
                import torch.nn.functional as F
                def detection_loss(cls, labels):
                    valid = labels >= 0
                    return F.cross_entropy(cls[valid], labels[valid])
                def evaluate(scores, labels):
                    keep = scores > 0.5
                    return (labels[keep] == 1).float().mean()
            """,
            "train.py": """
                from losses import detection_loss, evaluate
                def main(model, loader, opt, val):
                    for epoch in range(10):
                        for x, y in loader:
                            loss = detection_loss(model(x.cuda()), y.cuda())
                            loss.backward()
                            opt.step()
                        print(evaluate(model(val[0]), val[1]))
            """,
        },
    )
    found = [(Path(f.path).name, f.line, f.message) for f in lint_paths([tmp_path], select=["TD207"])]
    assert [(name, line) for name, line, _ in found] == [("losses.py", 5)]
    assert "in `detection_loss` (called at train.py:6, every training step)" in found[0][2]


def test_a_function_an_epoch_loop_calls_is_not_run_per_step(tmp_path: Path) -> None:
    # pytorch/examples FSDP: `for epoch in ...: train(...); scheduler.step()` calls train once
    # an epoch; its torch.zeros(2).to(rank) is made once an epoch, not every step
    _write(
        tmp_path,
        {
            "utils.py": """
                import torch
                def train(model, loader, rank):
                    totals = torch.zeros(2).to(rank)
                    for x in loader:
                        model(x).sum().backward()
                    return totals
                def augment(x, rank):
                    return x + torch.rand(x.shape).to(rank)
            """,
            "main.py": """
                from utils import augment, train
                def main(model, loader, scheduler, rank, opt):
                    for epoch in range(10):
                        train(model, loader, rank)
                        scheduler.step()
                    for x in loader:
                        model(augment(x, rank)).sum().backward()
                        opt.step()
            """,
        },
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD204"])]
    assert found == [("utils.py", 9)]


def test_a_constant_list_imported_from_another_file_is_a_literal(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "kpt_ops.py": "SIGMAS = [0.26, 0.25, 0.25, 0.35]\nNAMES = ['nose', 'eye']\n",
            "loss.py": """
                import torch
                import torch.nn as nn
                from kpt_ops import NAMES, SIGMAS
                class Criterion(nn.Module):
                    def forward(self, d2):
                        s = torch.tensor(SIGMAS, device=d2.device)
                        return d2 / s, len(NAMES)
            """,
        },
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD511"])]
    assert found == [("loss.py", 7)]
