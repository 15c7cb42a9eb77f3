"""Project helpers a forward calls, found across files (TD205 one call deep)."""

from __future__ import annotations

from pathlib import Path

from torchdoctor.lint import lint_paths


def test_a_helper_reading_ids_to_the_host_for_a_forward_is_found_in_a_file_without_forward(
    tmp_path,
):
    """ColBERT's utils.py builds the punctuation mask from `input_ids.cpu().tolist()`; its
    file has no forward, no assert and no training loop: the helper is still read."""
    (tmp_path / "utils.py").write_text(
        "def punctuation_mask(input_ids, skiplist, pad_id):\n"
        "    skip = set(skiplist)\n"
        "    return [[x not in skip and x != pad_id for x in d] for d in input_ids.cpu().tolist()]\n"
        "def read_rows(rows):\n"
        "    return [r.tolist() for r in rows]  # called by no forward\n"
    )
    (tmp_path / "colbert.py").write_text(
        "import torch\n"
        "import torch.nn as nn\n"
        "from utils import punctuation_mask\n"
        "class ColBERT(nn.Module):\n"
        "    def forward(self, ids, d):\n"
        "        keep = torch.tensor(punctuation_mask(ids, self.skip, 0), device=d.device)\n"
        "        return d * keep.unsqueeze(2)\n"
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD205"])]
    assert found == [("utils.py", 3)]


def test_a_helper_reached_through_a_plain_objects_call_from_a_forward_is_found(tmp_path):
    """RAFT's forward builds `corr_fn = CorrBlock(...)` (no Module) and calls `corr_fn(coords)`
    every iteration; CorrBlock.__call__ runs utils.bilinear_sampler, whose assert reads the
    coordinates. A helper only an object built outside any forward runs stays silent."""
    (tmp_path / "utils.py").write_text(
        "import torch\n"
        "def bilinear_sampler(img, coords):\n"
        "    assert torch.isfinite(coords).all(), 'non-finite'\n"
        "    return torch.nn.functional.grid_sample(img, coords)\n"
        "def check_grid(coords):\n"
        "    assert torch.isfinite(coords).all()  # run by a plotter built in a script\n"
        "    return coords\n"
    )
    (tmp_path / "model.py").write_text(
        "import torch.nn as nn\n"
        "from utils import bilinear_sampler, check_grid\n"
        "class CorrBlock:\n"
        "    def __init__(self, fmap):\n"
        "        self.pyramid = [fmap]\n"
        "    def __call__(self, coords):\n"
        "        return bilinear_sampler(self.pyramid[0], coords)\n"
        "class Plotter:\n"
        "    def __call__(self, coords):\n"
        "        return check_grid(coords)\n"
        "class RAFT(nn.Module):\n"
        "    def forward(self, fmap, coords):\n"
        "        corr_fn = CorrBlock(fmap)\n"
        "        for _ in range(12):\n"
        "            coords = coords + corr_fn(coords)\n"
        "        return coords\n"
        "def show(coords):\n"
        "    plot = Plotter()\n"
        "    return plot(coords)\n"
    )
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD205"])]
    assert found == [("utils.py", 3)]


def test_a_module_level_scan_a_forward_runs_through_a_method_slices_activations(tmp_path):
    """Mamba's reference selective_scan is a module-level function that MambaBlock.ssm (run by
    forward) calls on activations: `deltaA[:, :, i]` per time step is TD307. A function no
    forward calls, a mask argument sliced per step, a helper only a torch.autograd.Function's
    forward calls (autograd is off there) and integer coordinates hashed with ^= stay silent."""
    (tmp_path / "model.py").write_text(
        "import torch\n"
        "import torch.nn as nn\n"
        "def selective_scan(u, delta, A):\n"
        "    deltaA = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))\n"
        "    x = u.new_zeros(u.shape[0], A.shape[0], A.shape[1])\n"
        "    ys = []\n"
        "    for i in range(u.shape[2]):\n"
        "        x = deltaA[:, :, i] * x\n"
        "        ys.append(x.sum(-1))\n"
        "    return torch.stack(ys, dim=2)\n"
        "def masked_steps(h, mask):\n"
        "    out = []\n"
        "    for t in range(h.shape[1]):\n"
        "        out.append(h[:, t] * mask[:, t])\n"
        "    return torch.stack(out, 1)\n"
        "def offline_scan(delta, A):\n"
        "    deltaA = torch.exp(delta * A)\n"
        "    return [deltaA[:, :, i] for i in range(deltaA.shape[2])]\n"
        "def batch_inverse(x):\n"
        "    y = torch.zeros_like(x)\n"
        "    for i in range(x.shape[0]):\n"
        "        y[i] = x[i, :, :].inverse()\n"
        "    return y\n"
        "def spatial_hash(coords, primes):\n"
        "    h = torch.zeros_like(coords[..., 0])\n"
        "    for i in range(coords.shape[-1]):\n"
        "        h ^= coords[..., i] * primes[i]\n"
        "    return h\n"
        "class InvMatrix(torch.autograd.Function):\n"
        "    @staticmethod\n"
        "    def forward(ctx, x):\n"
        "        return batch_inverse(x)\n"
        "class MambaBlock(nn.Module):\n"
        "    def ssm(self, x):\n"
        "        return selective_scan(x, self.dt(x), self.A)\n"
        "    def forward(self, x, mask):\n"
        "        g = InvMatrix.apply(self.g) + spatial_hash(x.long(), self.primes)\n"
        "        return masked_steps(self.ssm(x), mask) + g\n"
    )
    found = [(f.line, f.message.split("`")[1]) for f in lint_paths([tmp_path], select=["TD307"])]
    assert found == [(8, "deltaA[:, :, i]"), (14, "h[:, t]")]


def test_a_helper_two_models_forwards_call_names_one_and_counts_the_other(tmp_path):
    """PointNet++'s SSG and MSG set abstractions both call the sampling helpers; which model
    runs is the script's option: the finding names the first forward and says another calls it
    too (it named MSG alone on a run of the SSG model)."""
    (tmp_path / "utils.py").write_text(
        "def farthest_point_sample(xyz, npoint):\n"
        "    n = int(xyz.shape[1])\n"
        "    return [xyz[:, i].cpu().tolist() for i in range(npoint)]\n"
    )
    forward = ("class {name}(nn.Module):\n"
               "    def forward(self, xyz):\n"
               "        return farthest_point_sample(xyz, 16)\n")
    header = "import torch.nn as nn\nfrom utils import farthest_point_sample\n"
    (tmp_path / "msg.py").write_text(header + forward.format(name="SetAbstractionMsg"))
    (tmp_path / "ssg.py").write_text(header + forward.format(name="SetAbstraction"))
    (finding,) = [f for f in lint_paths([tmp_path], select=["TD205"])]
    assert "called by `SetAbstraction" in finding.message
    assert ".forward` and 1 other forward, " in finding.message
    (tmp_path / "ssg.py").unlink()  # (near miss: one forward calls it)
    (finding,) = [f for f in lint_paths([tmp_path], select=["TD205"])]
    assert "called by `SetAbstractionMsg.forward`, msg.py:" in finding.message
