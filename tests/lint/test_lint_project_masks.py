"""Rules that follow a training step into another file: masks that show only as ``.any(0)``,
float64 in a loss function, a pinned loader another file builds,
a method an agent runs every step, accumulation under a DDP another file wraps, datasets that
need no loader workers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from torchdoctor.lint import lint_paths


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))


ASSIGN = """
    import torch
    def assign(gt, pred, centers):
        inside = (centers[None] - gt[:, None, :2]).abs().amax(-1) < gt[:, None, 2:3]
        cand = inside.any(0)
        cost = torch.cdist(gt[:, :2], pred[cand][:, :2])
        return cand, cost.argmin(0)
"""

HEAD = """
    import torch.nn as nn
    from assign import assign
    class Head(nn.Module):
        def forward(self, feats, gt, centers):
            pred = self.conv(feats).flatten(1).T
            return self.losses(pred, gt, centers)
        def losses(self, pred, gt, centers):
            cand, matched = assign(gt, pred, centers)
            return (pred[:, 0] * cand).sum() + matched.float().sum()
"""

TRAIN = """
    from head import Head
    def main(loader, opt):
        model = Head().cuda()
        for feats, gt, centers in loader:
            model(feats.cuda(), gt.cuda(), centers.cuda()).backward()
            opt.step()
"""


def test_a_mask_selection_in_a_helper_file_a_forward_reaches_is_reported(tmp_path: Path) -> None:
    # YOLOX's SimOTA: forward -> self.get_losses -> assign.simota_assign, a file with no
    # forward, no backward and no literal `[mask]`: linted all the same
    _write(tmp_path, {"assign.py": ASSIGN, "head.py": HEAD, "train.py": TRAIN})
    found = [(Path(f.path).name, f.line, f.message) for f in lint_paths([tmp_path], select=["TD207"])]
    assert [(name, line) for name, line, _ in found] == [("assign.py", 6)]
    assert "in `assign` (called by `Head.forward`" in found[0][2]


def test_the_same_helper_is_silent_when_nothing_moves_to_cuda(tmp_path: Path) -> None:
    _write(tmp_path, {"assign.py": ASSIGN, "head.py": HEAD,
                      "train.py": TRAIN.replace(".cuda()", "")})  # fmt: skip
    assert lint_paths([tmp_path], select=["TD207"]) == []


def test_float64_in_a_loss_function_another_files_cuda_loop_calls(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "sde.py": """
                import torch
                def dsm_loss(model, x):
                    t = torch.rand(x.shape[0], device=x.device, dtype=torch.float64)
                    return (model(x, t.float()) - x).pow(2).mean()
                def reference_loss(model, x):
                    t = torch.rand(x.shape[0], dtype=torch.float64)
                    return (model(x, t.float()) - x).pow(2).mean()
                class Net(torch.nn.Module):
                    def forward(self, x):
                        return self.proj(x.double()).float()
            """,
            "train.py": """
                from sde import dsm_loss, Net
                def main(loader, opt):
                    model = Net().cuda()
                    for x in loader:
                        dsm_loss(model, x.cuda()).backward()
                        opt.step()
            """,
        },
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD505"])]
    # reference_loss is called by no loop; a model's forward keeps float64 on purpose
    assert found == [("sde.py", 4)]


def test_float64_in_a_loss_looping_over_its_terms_is_per_step(tmp_path: Path) -> None:
    """A mixture-of-experts balance loss summed over layers: its loop runs within the step."""
    _write(tmp_path, {"moe.py": """
        import torch
        def balance_loss(router_probs, router_idx, n=8):
            loss = 0.0
            for p, i in zip(router_probs, router_idx):
                loss = loss + (p.double().mean(0) * i.mean(0)).sum()
            return loss.float()
        def val_loss(model, val_loader):
            return sum(model(x.double()).sum() for x in val_loader)
        def main(model, loader, opt):
            model = model.cuda()
            for x in loader:
                logits, probs, idx = model(x.cuda())
                (logits.sum() + balance_loss(probs, idx)).backward()
                opt.step()
            for x in val_loader:
                val_loss(model, [x])
    """})
    found = [f.line for f in lint_paths([tmp_path], select=["TD505"])]
    assert found == [6]  # (not val_loss, called by no training loop)


def test_a_pinned_loader_built_in_another_file_is_copied_blocking(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "data.py": """
                from torch.utils.data import DataLoader
                def build_ti_loader(ds):
                    return DataLoader(ds, batch_size=4, num_workers=2, pin_memory=True,
                                      persistent_workers=True)
                def build_plain_loader(ds):
                    return DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
            """,
            "train.py": """
                from data import build_ti_loader, build_plain_loader
                def main(ds, model, opt, device):
                    loader = build_ti_loader(ds)
                    for batch in loader:
                        ids = batch["input_ids"].to(device)
                        model(ids).sum().backward()
                        opt.step()
                    plain = build_plain_loader(ds)
                    for batch in plain:
                        model(batch["input_ids"].to(device)).sum().backward()
                        opt.step()
            """,
        },
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD404"])]
    assert found == [("train.py", 6)]  # (the unpinned loader's copy cannot overlap anyway)


def test_a_tuple_of_loaders_from_another_file_pins_only_the_pinned_ones(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "data.py": """
                from torch.utils.data import DataLoader
                def build_loaders(cfg):
                    train_loader = DataLoader(cfg.train, batch_size=4, num_workers=2,
                                              pin_memory=True, persistent_workers=True)
                    val_loader = DataLoader(cfg.val, batch_size=1)
                    return train_loader, val_loader
            """,
            "train.py": """
                from data import build_loaders
                def main(cfg, model, opt, device):
                    train_loader, val_loader = build_loaders(cfg)
                    for img, mask in train_loader:
                        img = img.to(device)
                        mask = mask.to(device, non_blocking=True)
                        model(img, mask).backward()
                        opt.step()
                    for img, mask in val_loader:
                        model(img.to(device), mask.to(device))
            """,
        },
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD404"])]
    assert found == [("train.py", 6)]  # (line 1 is blank)


def test_a_method_an_agent_runs_every_step_of_another_files_loop(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "agent.py": """
                import torch
                class DQNAgent:
                    def learn(self, obs):
                        weights = torch.ones(obs.shape[0]).to(self.device)
                        return (self.online(obs).max(1).values * weights).mean()
                    def save(self, path):
                        return torch.zeros(3).to(self.device)
            """,
            "train.py": """
                from agent import DQNAgent
                def main(env, steps):
                    agent = DQNAgent().to("cuda")
                    for t in range(steps):
                        obs = env.step(0)
                        agent.learn(obs).backward()
                    agent.save("last.pt")
            """,
        },
    )
    found = [(Path(f.path).name, f.line, f.message) for f in lint_paths([tmp_path], select=["TD204"])]
    assert [(name, line) for name, line, _ in found] == [("agent.py", 5)]  # (save: once)
    assert "called in a loop at train.py:7" in found[0][2]


@pytest.mark.parametrize("wrapped", [True, False])
def test_accumulation_in_one_file_under_ddp_from_another(tmp_path: Path, wrapped: bool) -> None:
    wrap = "model = DDP(model, device_ids=[rank])" if wrapped else "model = model.cuda()"
    _write(
        tmp_path,
        {
            "main.py": f"""
                from torch.nn.parallel import DistributedDataParallel as DDP
                from engine import train_one_epoch
                def main(model, loader, opt, rank):
                    {wrap}
                    train_one_epoch(model, loader, opt, accum=4)
            """,
            "engine.py": """
                def train_one_epoch(model, loader, opt, accum):
                    for step, batch in enumerate(loader):
                        loss = model(batch).mean()
                        (loss / accum).backward()
                        if (step + 1) % accum == 0:
                            opt.step()
                            opt.zero_grad()
            """,
        },
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD706"])]
    assert found == ([("engine.py", 5)] if wrapped else [])


def test_datasets_that_move_their_items_or_sit_in_a_dict_need_no_workers(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "data.py": """
                import torch
                from torch.utils.data import Dataset
                class Rows(Dataset):
                    def __init__(self, x, device):
                        self.x, self.device = x, device
                    def __len__(self):
                        return len(self.x)
                    def __getitem__(self, i):
                        return self.x[i].to(self.device)
                class Files(Dataset):
                    def __getitem__(self, i):
                        return torch.load(f"{i}.pt").to("cuda")
                class Features(Dataset):
                    def __getitem__(self, i):
                        wav = torch.load(f"{i}.pt").to(self.device)
                        return self.mel(wav).cpu()
            """,
            "train.py": """
                import torch
                from torch.utils.data import DataLoader, TensorDataset
                from data import Files, Rows
                def main(x, parts, device):
                    rows = DataLoader(Rows(x, device), batch_size=8)
                    sets = {k: TensorDataset(torch.as_tensor(parts[k])) for k in ("val", "test")}
                    val = DataLoader(sets["val"], batch_size=1024)
                    files = DataLoader(Files(), batch_size=8)
                    feats = DataLoader(Features(), batch_size=8)
                    return rows, val, files, feats
            """,
        },
    )
    found = lint_paths([tmp_path], select=["TD401", "TD402"])
    workers = [f for f in found if f.code == "TD401"]
    assert [(Path(f.path).name, f.line) for f in workers] == [("train.py", 9), ("train.py", 10)]
    assert "move that copy to the loop" in workers[0].message
    assert "move that copy" not in workers[1].message  # (its items come back with .cpu())
    pinned = {f.line for f in found if f.code == "TD402"}
    assert 10 in pinned and not pinned & {6, 9}  # (CUDA items cannot be pinned; host ones can)


def test_a_samplers_set_up_runs_once_per_sampling_not_per_step(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "ddim.py": """
                import torch
                class Sampler:
                    def make_schedule(self, alphas):
                        self.a = torch.tensor(alphas.cpu().numpy(), device="cuda")
                    def noise_level(self, alphas, t):
                        return torch.tensor(alphas[t].tolist(), device="cuda")
                    def sample(self, alphas, x):
                        self.make_schedule(alphas)
                        for t in range(50):
                            x = self.model(x, self.noise_level(alphas, t))
                        return x
            """,
            "run.py": """
                import torch
                from ddim import Sampler
                def main(alphas, batches):
                    sampler = Sampler()
                    with torch.no_grad():
                        for x in batches:
                            sampler.sample(alphas, x)
            """,
        },
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD203"])]
    assert found == [("ddim.py", 7)]  # (the per-step noise level, not the schedule)
