"""User lines whose time is code torch.compile generated: the compiled kernels, not Python.

A function compiled with ``torch.compile`` runs Inductor's output code (a Python file in its
cache directory, ``session_read.compiled_output``); the profiler charges its torch calls, and
the samples of its kernels, to the user line that ran the function, with the generated file's
frames as ``via``. Such a line is no per-element Python loop to batch and no work to move out
of a loop: rewriting its Python changes nothing. gpt-fast's ``decode_one_token``, compiled and
called once per token, was "a per-element Python loop: batch it" and "work the loop does
between steps: do it every 10 steps".

Example:
    >>> compiled_code({"forward_ms": {"mean": 5.0},
    ...                "via": [{"file": "/tmp/torchinductor_me/cb/cbnt.py", "ms": 4.8}]})
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import center
from torchdoctor.session_read import compiled_output


def compiled_code(row: Mapping[str, Any], ms: float | None = None) -> bool:
    """Whether (nearly) all of a line's time is the code torch.compile generated for a
    function the line runs: its ``via`` frames in Inductor's output hold half or more of the
    line's forward time (a hot line) or of ``ms`` (a sampled line's ``ms_per_step``).

    Example:
        >>> row = {"ms_per_step": 105.0, "via": [{"file": "/w/lib.py", "ms_per_step": 90.0}]}
        >>> compiled_code(row, 105.0)
        False
    """
    total = center(row.get("forward_ms")) if ms is None else ms
    spent = sum(
        float(v.get("ms") or v.get("ms_per_step") or 0.0)
        for v in row.get("via") or ()
        if compiled_output(v.get("file"))
    )
    return total > 0 and spent >= 0.5 * total  # (the rest: Dynamo's guards, torch's code)


#: the fix of a line running a torch.compile'd function (its calls are the compiled kernels)
COMPILED_FIX = (
    "The line runs a function torch.compile compiled: its time is the compiled graph's "
    "kernels, so rewriting its Python changes nothing. Make the heaviest kernels cheaper "
    "(their shapes: a smaller vocabulary projection, bf16 on a GPU), try "
    "mode='max-autotune'; on a GPU, mode='reduce-overhead' (CUDA graphs) removes the "
    "per-kernel launches of small steps. Run once per element of a loop (one token per call "
    "of a decoder), the loop is the algorithm's: batch several sequences per call. "
    "torch.profiler (or TORCH_COMPILE_DEBUG=1) names the kernels inside."
)
