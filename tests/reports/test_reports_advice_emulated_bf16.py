"""Rule emulated-bf16: autocast to bfloat16 where the device has no bfloat16 in hardware (the
Hugging Face Trainer's bf16=True on an AVX2 CPU: a BERT step took 2,316 ms, 186 ms without)."""

from __future__ import annotations

import pytest

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.base import SPEEDUPS, amdahl_saving
from torchdoctor.analyze.advice.emulated_bf16 import emulated_bf16


def _session(device="cpu", native=False, dtype="bfloat16"):
    return {
        "step_ms": {"median": 2316.0},
        "phases": {"forward": {"median": 388.0}, "backward": {"median": 1925.0}},
        "environment": {"device": device, "bf16_native": native,
                        "knobs": {"autocast": dtype is not None, "autocast_dtype": dtype}},
    }  # fmt: skip


def test_bf16_autocast_on_a_cpu_without_bf16_is_told_to_run_in_float32():
    (item,) = emulated_bf16(_session())
    assert item.title.startswith("Autocast to bfloat16 on a CPU without bfloat16 instructions")
    assert item.confidence == "high" and item.cause == "emulated-bf16"
    speedup = SPEEDUPS["emulated_bf16"]
    assert item.estimated_saving_ms == pytest.approx(
        amdahl_saving(2316.0, 2313.0 / 2316.0, speedup.low)
    )
    assert "bf16=False" in item.fix and "32-true" in item.fix
    assert advise(_session())[0].rule == "emulated-bf16"  # (first: the largest saving)


@pytest.mark.parametrize(
    "session",
    [_session(native=True), _session(native=None), _session(dtype="float16"),
     _session(dtype=None)],
    ids=["native bf16", "unknown hardware", "float16", "no autocast"],
)  # fmt: skip
def test_silent_where_bf16_is_native_unknown_or_not_used(session):
    assert emulated_bf16(session) == []


def test_a_gpu_without_bf16_units_is_named_without_a_cpu_measured_saving():
    (item,) = emulated_bf16(_session(device="cuda:0 Tesla V100-SXM2-16GB"))
    assert "a GPU without bfloat16 units" in item.title
    assert item.estimated_saving_ms is None and item.heat > 0.9
    assert not any("measured" in line for line in item.evidence)


def test_float16_autocast_on_a_cpu_without_amx_fp16_is_named_too():
    session = _session(dtype="float16")
    session["environment"]["fp16_native"] = False
    (item,) = emulated_bf16(session)
    assert item.title.startswith("Autocast to float16 on a CPU without float16 instructions")
    assert "no AMX-FP16" in item.evidence[1] and "fp16=False" in item.fix
    session["environment"]["fp16_native"] = True
    assert emulated_bf16(session) == []
