"""Rules that follow a value across files: pinned loaders (TD404), a model's sigmoid output (TD510)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths

ENGINE = """
    def fit_epoch(net, batches, opt):
        for images, masks in batches:
            images = images.cuda(non_blocking=True)
            masks = masks.cuda()
            loss = net(images, masks)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def score(net, batches):
        for images, masks in batches:
            net(images.cuda(), masks.cuda())
"""

SCRIPT = """
    from torch.utils.data import DataLoader
    from engine import fit_epoch, score

    def main(net, opt, train_set, test_set):
        pinned = DataLoader(train_set, batch_size=8, num_workers=4, pin_memory=True,
                            persistent_workers=True)
        plain = DataLoader(test_set, batch_size=8, num_workers=4, persistent_workers=True)
        for _ in range(10):
            fit_epoch(net, pinned, opt)
        score(net, plain)
"""


def test_a_loader_pinned_in_the_script_is_checked_in_the_engine_that_iterates_it(
    tmp_path: Path,
) -> None:
    """The script pins the loader it passes to `fit_epoch`: the engine's blocking copy of a
    batch item is TD404; `score` gets an unpinned loader (its blocking copies are fine)."""
    (tmp_path / "engine.py").write_text(textwrap.dedent(ENGINE))
    (tmp_path / "main.py").write_text(textwrap.dedent(SCRIPT))
    found = [(Path(f.path).name, f.line, f.code) for f in lint_paths([tmp_path], select=["TD404"])]
    assert found == [("engine.py", 5, "TD404")]
    message = lint_paths([tmp_path], select=["TD404"])[0].message
    assert "main.py:6" in message and "`masks.cuda()`" in message
    # alone, the engine shows no loader: nothing to say
    assert lint_paths([tmp_path / "engine.py"], select=["TD404"]) == []


def test_a_sigmoid_returned_by_a_model_of_another_file_and_fed_to_bce_is_found(
    tmp_path: Path,
) -> None:
    """TD510 across files: the tagger's forward returns `torch.sigmoid(...)` first and a pooled
    score second; the loss module unpacks both and feeds each to `nn.BCELoss`: only the
    sigmoid's output is reported."""
    (tmp_path / "tagger.py").write_text(textwrap.dedent("""
        import torch
        import torch.nn as nn

        class Tagger(nn.Module):
            def __init__(self):
                super().__init__()
                self.frame = nn.Linear(64, 10)

            def forward(self, feats):
                frames = torch.sigmoid(self.frame(feats))
                clip = frames.mean(1)
                return frames.permute(0, 2, 1), clip
    """))
    (tmp_path / "objective.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        from tagger import Tagger

        class Objective(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = Tagger()
                self.bce = nn.BCELoss()

            def forward(self, feats, frame_y, clip_y):
                frames, clip = self.net(feats)
                return self.bce(frames, frame_y) + self.bce(clip, clip_y)
    """))
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD510"])]
    assert found == [("objective.py", 13)]
    assert lint_paths([tmp_path / "objective.py"], select=["TD510"]) == []  # alone: unknown


SPEC_DATA = """
    import torch
    import torchaudio
    from torch.utils.data import Dataset

    class SpecDataset(Dataset):
        def __init__(self, paths, device):
            self.paths, self.device = paths, device

        def __getitem__(self, i):
            audio, _ = torchaudio.load(self.paths[i])
            return audio.to(self.device)
"""

SPEC_TRAIN = """
    import data
    from torch.utils.data import DataLoader

    def main(paths, model, opt):
        ds = data.SpecDataset(paths, "cuda")
        loader = DataLoader(ds, batch_size=16, shuffle=True)
        for x in loader:
            model(x).sum().backward()
            opt.step()
"""


def test_a_dataset_of_an_imported_module_that_copies_items_to_the_device(tmp_path: Path) -> None:
    """`data.SpecDataset(...)` copies each item to CUDA in `__getitem__`: pinning its device
    tensors would fail, so no TD402; TD401 says the copy must move out before workers can
    help (as for a class named without its module)."""
    (tmp_path / "data.py").write_text(textwrap.dedent(SPEC_DATA))
    (tmp_path / "train.py").write_text(textwrap.dedent(SPEC_TRAIN))
    found = lint_paths([tmp_path], select=["TD401", "TD402"])
    assert [(Path(f.path).name, f.line, f.code) for f in found] == [("train.py", 7, "TD401")]
    assert "which workers cannot do" in found[0].message


def test_a_per_item_loop_over_an_imported_tensor_helper_is_found(tmp_path: Path) -> None:
    """MuZero's support projection run row by row: the helper lives in networks.py; a helper
    of another file that reads tensors on the host (host work per item) stays silent."""
    (tmp_path / "networks.py").write_text(textwrap.dedent("""
        import torch

        def to_support(x, s):
            x = torch.sign(x) * (torch.sqrt(torch.abs(x) + 1) - 1)
            return x.clamp(-s, s)

        def clipped(x, s):
            return torch.tensor([min(v, s) for v in x.tolist()])
    """))
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import torch
        from networks import clipped, to_support

        def targets(values, s):
            phi = []
            for i in range(values.shape[0]):
                phi.append(to_support(values[i], s))
            return torch.stack(phi)

        def listed(values, s):
            rows = []
            for i in range(values.shape[0]):
                rows.append(clipped(values[i], s))
            return torch.stack(rows)
    """))
    found = [(Path(f.path).name, f.line, f.code) for f in lint_paths([tmp_path], select=["TD304"])]
    assert found == [("train.py", 7, "TD304")]


def test_a_method_of_a_ddp_wrapped_model_called_every_step(tmp_path: Path) -> None:
    """ST-GCN: `model = DDP(STGCN(...))`, and the loop calls `model.module.frame_features(x)`,
    which builds a Linear head at every call (TD513). A method the loop calls only every 100
    steps stays silent."""
    (tmp_path / "model.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        class STGCN(nn.Module):
            def forward(self, x):
                return x

            def frame_features(self, x):
                return nn.Linear(x.shape[-1], 128)(x)

            def debug_features(self, x):
                return nn.Linear(x.shape[-1], 128)(x)
    """))
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        from torch.nn.parallel import DistributedDataParallel as DDP
        from model import STGCN

        def main(loader, opt):
            model = STGCN().cuda()
            model = DDP(model)
            for it, x in enumerate(loader):
                loss = model.module.frame_features(x).sum()
                if it % 100 == 0:
                    model.module.debug_features(x)
                loss.backward()
                opt.step()
    """))
    found = [(Path(f.path).name, f.line, f.code) for f in lint_paths([tmp_path], select=["TD513"])]
    assert found == [("model.py", 9, "TD513")]


H5_TRAIN = """
    import h5py
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Waveforms(Dataset):
        def __init__(self, path, names, device):
            self.path, self.names, self.device, self.h5 = path, names, device, None

        def __getitem__(self, i):
            if self.h5 is None:
                self.h5 = h5py.File(self.path, "r")
            return torch.as_tensor(self.h5["data"][self.names[i]]).to(self.device)

    class Cached(Dataset):
        def __init__(self, x, device):
            self.x, self.device = x, device

        def __getitem__(self, i):
            return self.x[i].to(self.device)

    def main(path, names, x, model, opt):
        loader = DataLoader(Waveforms(path, names, "cuda"), batch_size=64)
        cached = DataLoader(Cached(x, "cuda"), batch_size=64)
        for a, b in zip(loader, cached):
            model(a + b).sum().backward()
            opt.step()
"""


def test_a_dataset_reading_an_hdf5_file_per_item_wants_workers(tmp_path: Path) -> None:
    """STEAD's waveforms: `h5py.File` opened in `__getitem__`, then each item copied to CUDA:
    a file read per item, so TD401 (the copy must move out first); the near miss indexes
    memory, where workers would not help."""
    (tmp_path / "train.py").write_text(textwrap.dedent(H5_TRAIN))
    found = lint_paths([tmp_path], select=["TD401", "TD402"])
    assert [(f.line, f.code) for f in found] == [(23, "TD401")]
    assert "which workers cannot do" in found[0].message


LAMBDA_LOADERS = """
    from torch.utils.data import DataLoader

    def make_loaders(train, val, test, batch=64):
        mk = lambda ds, sh: DataLoader(ds, batch_size=batch, shuffle=sh, num_workers=4,
                                       pin_memory=True, persistent_workers=True)
        plain = lambda ds: DataLoader(ds, batch_size=batch, num_workers=4, persistent_workers=True)
        return mk(train, True), mk(val, False), plain(test)
"""

LAMBDA_TRAIN = """
    from data import make_loaders

    def main(train, val, test, model, opt, device):
        train_loader, val_loader, test_loader = make_loaders(train, val, test)
        for x, y in train_loader:
            x = x.to(device)
            model(x, y.to(device, non_blocking=True)).backward()
            opt.step()
        for x in test_loader:
            model(x.to(device))
"""


def test_loaders_a_lambda_of_another_file_makes_are_pinned(tmp_path: Path) -> None:
    """Graph WaveNet's `mk = lambda s, sh: DataLoader(..., pin_memory=True)`, returned as
    `mk(train, True), ...`: the batches of `train_loader` are pinned, so the blocking copy is
    TD404; the test loader a lambda makes without pinning (near miss) is not."""
    (tmp_path / "data.py").write_text(textwrap.dedent(LAMBDA_LOADERS))
    (tmp_path / "train.py").write_text(textwrap.dedent(LAMBDA_TRAIN))
    found = lint_paths([tmp_path / "train.py", tmp_path / "data.py"], select=["TD404"])
    assert [(Path(f.path).name, f.line) for f in found] == [("train.py", 7)]


_EVALUATE = """
    import torch

    def evaluate(model, loader):
        model.eval()
        total = 0.0
        for x, y in loader:
            total += (model(x) - y).abs().sum()
        return total
"""


def test_an_evaluate_called_under_no_grad_is_not_judged_by_another_scripts_own_evaluate(
    tmp_path: Path,
) -> None:
    """Two scripts each define their own `evaluate`: qm9.py calls its one under no_grad (no
    TD602), speech.py calls its one bare (TD602). A third file importing qm9's `evaluate`
    and calling it bare makes qm9's loop TD602 again (corpus 31's EGNN and Conformer)."""
    (tmp_path / "qm9.py").write_text(textwrap.dedent(_EVALUATE + """
    def main(model, loader):
        with torch.no_grad():
            print(evaluate(model, loader))
    """))
    (tmp_path / "speech.py").write_text(textwrap.dedent(_EVALUATE + """
    def main(model, loader):
        print(evaluate(model, loader))
    """))
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD602"])]
    assert found == [("speech.py", 7)]
    (tmp_path / "report.py").write_text("from qm9 import evaluate\n\ndef run(model, loader):\n"
                                        "    return evaluate(model, loader)\n")
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD602"])]
    assert sorted(found) == [("qm9.py", 7), ("speech.py", 7)]
