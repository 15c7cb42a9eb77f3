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
