"""Whose line a sync is told at: torchdoctor's own frames are never "your line"."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from torchdoctor.collect.syncs_frames import _extra_prefixes, skip_paths, user_frame
from torchdoctor.integrations.huggingface import TorchDoctorCallback

LIBRARY = """
import sys
class Trainer:
    def train(self, probe):
        return probe(sys._getframe())
"""


def test_an_integrations_wrapper_is_not_the_users_line(tmp_path: Path):
    """The Hugging Face callback wraps trainer.train: a library sync reached through it was
    told as "your line huggingface.py:122 return original(*args, **kwargs)"."""
    (tmp_path / "fakelib.py").write_text(LIBRARY)
    spec = importlib.util.spec_from_file_location("fakelib", tmp_path / "fakelib.py")
    fakelib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fakelib)
    before = list(_extra_prefixes)
    skip_paths(str(tmp_path))  # (the trainer's file is library code, as transformers is)
    try:
        callback = TorchDoctorCallback.__new__(TorchDoctorCallback)
        callback._guarded = set()
        trainer = fakelib.Trainer()
        callback._guard(trainer)
        file, _, function = trainer.train(user_frame)  # (through the callback's wrapper)
    finally:
        _extra_prefixes[:] = before
    assert file == __file__, file
    assert function == "test_an_integrations_wrapper_is_not_the_users_line"
