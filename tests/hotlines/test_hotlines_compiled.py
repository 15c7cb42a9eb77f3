"""A function torch.compile compiled, called once per token (gpt-fast's decode_one_token): its
torch calls come from Inductor's output code, a Python file in the compile cache. They are
charged to the user line that ran the function, through that file, and the advice says the
line's time is the compiled kernels' (it was "a per-element Python loop: batch it")."""

import importlib.util
import os

import torch

from tests.hotlines.hotlines_helpers import lines_at, marked_line, profile
from torchdoctor.analyze.advice.compiled_lines import COMPILED_FIX

# what Inductor writes (the shape of its output code: a call() of extern kernels)
_OUTPUT_CODE = '''
import torch

def call(args):
    x, w = args
    buf = torch.mm(x, w)
    for _ in range(6):
        buf = torch.mm(torch.tanh(buf), w)
    return (buf,)
'''


def _compiled_module(tmp_path):
    folder = tmp_path / "torchinductor_me" / "cb"
    folder.mkdir(parents=True)
    path = folder / "cbnttj42shwl6flsktbxovnaiicsu7ep5fitvbx56xx6dmfr2tpm.py"
    path.write_text(_OUTPUT_CODE)
    spec = importlib.util.spec_from_file_location("inductor_output", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, str(path)


def test_a_compiled_functions_calls_are_its_kernels_not_a_python_loop(tmp_path):
    output, generated = _compiled_module(tmp_path)
    w = torch.randn(384, 384) / 20  # (kernels of ~0.3 ms: the profiler's per-call cost is small)
    x = torch.randn(32, 384)

    def decode_one_token(token):
        return output.call((token, w))[0]  # compiled

    def step():
        token = x
        for _ in range(24):
            token = decode_one_token(token)
        return token

    session = profile(step)
    here = __file__
    (row,) = lines_at(session, here, marked_line(decode_one_token, "compiled"))
    assert row["calls_per_step"] == 24 and row["torch_calls_per_step"] >= 24 * 13
    assert any(os.path.samefile(v["file"], generated) for v in row["via"])
    assert not any(os.path.samefile(r["file"], generated)
                   for r in session["hot_lines"]["lines"])  # fmt: skip
    (advice,) = [a for a in session["advice"] if a["rule"] == "hot-line"
                 and f":{row['line']}" in a["title"]]  # fmt: skip
    assert "code torch.compile generated (24 runs per step)" in advice["title"]
    assert advice["fix"] == COMPILED_FIX and "batch it" not in advice["title"]
