"""Rule ``emulated-bf16``: autocast to bfloat16 (or float16) on a device without it in hardware.

On a CPU without AVX512-BF16 or AMX (an AVX2 server, most laptops), ``torch.autocast("cpu",
dtype=torch.bfloat16)`` (the Hugging Face Trainer's ``bf16=True``, Lightning's
``precision="bf16-mixed"``, on a CPU) runs every matmul and convolution in an emulated path:
the step gets many times slower, not faster. On a GPU before compute capability 8.0 (V100, T4)
bfloat16 is emulated too; float16 on a CPU without AMX-FP16 as well (the suite's MLP pair:
19.8x on this AVX2 CPU). The session records both facts (``environment.knobs.autocast_dtype``,
seen at the first module calls; ``environment.bf16_native``, asked of torch); the saving is
stated from the measured pair (``SPEEDUPS["emulated_bf16"]``, suite ``fused``).

Example:
    >>> session = {"step_ms": {"median": 100.0}, "environment": {"device": "cpu",
    ...     "bf16_native": False, "knobs": {"autocast": True, "autocast_dtype": "bfloat16"}},
    ...     "phases": {"forward": {"median": 30.0}, "backward": {"median": 65.0}}}
    >>> [a.title for a in emulated_bf16(session)]
    ['Autocast to bfloat16 on a CPU without bfloat16 instructions: its matmuls are emulated, run in float32']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    SPEEDUPS,
    Advice,
    center,
    fmt_ms,
    pct,
    saving_step_ms,
    tree_step_ms,
    with_saving,
)

#: autocast dtype -> the environment field saying the device computes it in hardware
_NATIVE = {"bfloat16": "bf16_native", "float16": "fp16_native"}


def emulated_bf16(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when the step autocasts to bfloat16 (or float16) on a device that emulates
    it (float16: a CPU without AMX-FP16; every CUDA GPU has it).

    Example:
        >>> emulated_bf16({})  # (a session without the evidence this rule reads)
        []
    """
    environment = session.get("environment") or {}
    knobs = environment.get("knobs") or (session.get("config") or {}).get("knobs") or {}
    dtype = knobs.get("autocast_dtype")
    if dtype not in _NATIVE or environment.get(_NATIVE[dtype]) is not False:
        return []
    step = tree_step_ms(session)
    phases = session.get("phases") or {}
    compute = center(phases.get("forward")) + center(phases.get("backward"))
    if step <= 0 or compute <= 0:
        return []
    cpu = not str(environment.get("device") or "cpu").startswith("cuda")
    where = f"a CPU without {dtype} instructions" if cpu else f"a GPU without {dtype} units"
    speedup = SPEEDUPS["emulated_bf16"]
    item = Advice(
        rule="emulated-bf16",
        title=f"Autocast to {dtype} on {where}: its matmuls are emulated, run in float32",
        confidence="high" if cpu else "medium",
        evidence=[
            f"autocast: {dtype}; forward + backward are {fmt_ms(compute)} "
            f"({pct(compute, step):.0f}% of the step)",
            ("this CPU has neither AVX512-BF16 nor AMX (torch.cpu)" if dtype == "bfloat16"
             else "this CPU has no AMX-FP16 (torch.cpu)")
            if cpu
            else "torch.cuda.is_bf16_supported(including_emulation=False) is False "
            "(compute capability below 8.0)",
            f"measured: float32 {speedup.low:g}-{speedup.high:g}x faster on that part "
            f"({speedup.source})",
        ],
        fix=f"Turn the {dtype} autocast off on this device: TrainingArguments(bf16=False, "
        "fp16=False) / Trainer(precision=\"32-true\") / drop the torch.autocast(...) block "
        "(keep bfloat16 for a device with it in hardware: a CPU with AVX512-BF16 or AMX, a GPU "
        "of compute capability 8.0+; on an older GPU, float16 with a GradScaler).",
        references=["torch.autocast", "torch.cpu"],
        code='with torch.autocast("cpu", dtype=torch.bfloat16):  # before: emulated here\n'
        "    loss = model(x)\n"
        "loss = model(x)                                     # after: float32",
        cause="emulated-bf16",
    )
    if not cpu:  # (measured on a CPU: no stated saving for a GPU's emulation)
        item.evidence.pop()
        item.heat = min(1.0, compute / step)
        return [item]
    return [with_saving(item, saving_step_ms(session), min(1.0, compute / step), speedup)]
