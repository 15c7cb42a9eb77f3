"""What the tests of the script options share: a loader that stalls the step (so the
data-loading advice, whose remedy is the number of workers, is told) and `torchdoctor run` of a
script, read back as its session and its options by destination."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from torchdoctor.cli import main

#: a Dataset whose items wait 4 ms each: a loader with no workers stalls every step
SLOW_DATASET = textwrap.dedent("""\
    class Slow(Dataset):
        def __len__(self):
            return 10_000
        def __getitem__(self, i):
            time.sleep(0.004)
            return torch.randn(8), torch.randn(1)
""")


def run_for_options(tmp_path: Path, capsys: Any, text: str, *args: str,
                    name: str = "train.py") -> tuple[dict, dict]:  # fmt: skip
    """(the session, its script options by destination) of ``torchdoctor run`` of ``text``
    saved as ``name`` with ``args``; the run must exit 0."""
    script = tmp_path / name
    script.write_text(text)
    out = tmp_path / "prof"
    code = main(["run", "--no-history", "--format", "json", "--out", str(out), str(script),
                 *args])  # fmt: skip
    capsys.readouterr()
    assert code == 0
    session = json.loads((out / "session.json").read_text())
    return session, {o["dest"]: o for o in session["environment"]["script_options"]}
