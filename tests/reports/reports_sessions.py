"""Crafted sessions for the advice and report tests (plain dicts in the schema's shape)."""

from __future__ import annotations

import copy
from typing import Any

from torchdoctor.session import empty_session_dict, stat


def s(value: float) -> dict[str, float]:
    """A Stat whose every field is ``value``."""
    return stat([value])


def node(
    path: str,
    fwd: float,
    bwd: float = 0.0,
    *,
    kind: str = "module",
    type: str | None = None,
    children: list | None = None,
    source: dict | None = None,
    calls: float = 1.0,
) -> dict[str, Any]:
    """A tree node with forward/backward medians; a "self" child fills the parent's rest."""
    children = list(children or [])
    if children:
        rest_f = fwd - sum(c["forward_ms"]["median"] for c in children)
        rest_b = bwd - sum(c["backward_ms"]["median"] for c in children)
        if rest_f > 1e-9 or rest_b > 1e-9:
            children.append(
                {
                    "path": f"{path}.<self>" if path else "<self>",
                    "name": "<self>",
                    "kind": "self",
                    "type": None,
                    "calls_per_step": 1.0,
                    "forward_ms": s(max(rest_f, 0.0)),
                    "forward_self_ms": s(max(rest_f, 0.0)),
                    "backward_ms": s(max(rest_b, 0.0)),
                    "backward_self_ms": s(max(rest_b, 0.0)),
                    "total_ms": s(max(rest_f, 0.0) + max(rest_b, 0.0)),
                    "activation_bytes": None,
                    "source": None,
                    "children": [],
                }
            )
    return {
        "path": path,
        "name": path.rsplit(".", 1)[-1] if path else "step",
        "kind": kind,
        "type": type,
        "calls_per_step": calls,
        "forward_ms": s(fwd),
        "forward_self_ms": s(0.0),
        "backward_ms": s(bwd),
        "backward_self_ms": s(0.0),
        "total_ms": s(fwd + bwd),
        "activation_bytes": None,
        "source": source,
        "children": children,
    }


TRAIN = "/home/me/proj/train.py"
MODEL = "/home/me/proj/model.py"


def slow_session(evil: str | None = None) -> dict[str, Any]:
    """A CUDA diffusion-policy-like training step on which every advice rule fires.

    ``evil`` replaces a module name and a file name (escaping tests).
    """
    layers = [
        node(
            f"model.decoder.layers.{i}",
            20 / 3,
            40 / 3,
            type="DecoderLayer",
            children=[
                node(f"model.decoder.layers.{i}.self_attn", 2.0, 4.0, type="MultiheadAttention")
            ],
        )
        for i in range(6)
    ]
    encoder_name = evil or "encoder"
    model = node(
        "model",
        60.0,
        105.0,
        type="DiT",
        source={"file": MODEL, "line": 1, "end_line": 200, "function": "forward"},
        children=[
            node(
                f"model.{encoder_name}",
                10.0,
                5.0,
                type="TransformerEncoder",
                source={"file": evil or MODEL, "line": 10, "end_line": 40, "function": "forward"},
            ),
            node("model.decoder", 40.0, 80.0, type="Decoder", children=layers),
            node(
                "model.pac_loss",
                2.0,
                20.0,
                kind="region",
                source={"file": TRAIN, "line": 50, "end_line": 60, "function": "loss"},
            ),
        ],
    )
    match = node(
        "linear_sum_assignment",
        15.0,
        kind="region",
        source={"file": TRAIN, "line": 70, "end_line": 75, "function": "step"},
    )
    root = node("", 80.0, 105.0, kind="root", children=[model, match])
    root["total_ms"] = s(200.0)
    data = empty_session_dict("diffusion_policy (crafted)")
    data.update(
        environment={
            "torch": "2.13.0",
            "python": "3.11",
            "platform": "linux",
            "device": "cuda:0 NVIDIA H200",
            "threads": 2,
            "cuda": "12.8",
            "knobs": {"autocast": False, "tf32": None, "compile": None},
        },
        config={
            "steps": 10,
            "warmup": 3,
            "timing": "cuda_events",
            "step_boundary": "optimizer",
            "syncs": True,
            "notes": [],
        },
        steps=[
            {
                "index": i,
                "wall_ms": 200.0 + i,
                "phases": {
                    "data": 25.0,
                    "forward": 60.0,
                    "backward": 105.0,
                    "optimizer": 8.0,
                    "other": 2.0,
                },
                "peak_memory_bytes": None,
            }
            for i in range(3)
        ],
        phases={
            "data": s(25.0),
            "forward": s(60.0),
            "backward": s(105.0),
            "optimizer": s(8.0),
            "other": s(2.0),
        },
        step_ms=s(200.0),
        tree=root,
        syncs=[
            {
                "kind": "item",
                "op": "loss.item()",
                "file": TRAIN,
                "line": 88,
                "function": "train_step",
                "count": 30,
                "per_step": 3.0,
                "phase": "other",
                "stall_ms": 0.8,
                "would_sync_on_cuda": True,
            },
            {
                "kind": "nonzero",
                "op": "idx = mask.nonzero()",
                "file": TRAIN,
                "line": 92,
                "function": "train_step",
                "count": 100,
                "per_step": 10.0,
                "phase": "forward",
                "stall_ms": None,
                "would_sync_on_cuda": True,
            },
            {
                "kind": "cpu",
                "op": "cost.cpu().numpy()",
                "file": evil or TRAIN,
                "line": 72,
                "function": evil or "match",
                "count": 10,
                "per_step": 1.0,
                "phase": "forward",
                "stall_ms": 0.5,
                "would_sync_on_cuda": True,
            },
        ],
        sync_audit={"mode": "fast", "overhead_pct": 3.0, "device": "cuda"},
        recomputation=[
            {
                "path": f"model.{encoder_name}",
                "calls_per_step": 10,
                "identical_input_calls": 9,
                "time_per_call_ms": 1.5,
                "source": {"file": evil or MODEL, "line": 10},
            }
        ],
        inference={
            "train_step_ms": 200.0,
            "inference_ms": 5.0,
            "train_inference_ratio": 40.0,
            "backward_forward_ratio": 1.75,
        },
        timeline=[
            {"name": "data", "cat": "phase", "ts_us": 0.0, "dur_us": 25000.0, "depth": 0},
            {"name": "model", "cat": "forward", "ts_us": 25000.0, "dur_us": 60000.0, "depth": 1},
            {
                "name": f"model.{encoder_name}",
                "cat": "forward",
                "ts_us": 25000.0,
                "dur_us": 10000.0,
                "depth": 2,
            },
            {"name": "model", "cat": "backward", "ts_us": 85000.0, "dur_us": 105000.0, "depth": 1},
            {
                "name": "linear_sum_assignment",
                "cat": "region",
                "ts_us": 190000.0,
                "dur_us": 8000.0,
                "depth": 1,
            },
        ],
        lint=[
            {
                "code": "TD201",
                "severity": "warning",
                "message": ".item() inside the training loop",
                "path": "proj/train.py",
                "line": 88,
                "column": 4,
                "end_line": 88,
                "end_column": 20,
                "replacement": "torchdoctor.train.LazyMetrics",
                "fixable": False,
            },
            {
                "code": "TD301",
                "severity": "info",
                "message": "explicit matrix inverse",
                "path": "proj/other.py",
                "line": 5,
                "column": 0,
                "end_line": 5,
                "end_column": 9,
                "replacement": None,
                "fixable": False,
            },
        ],
    )
    return data


def clean_session() -> dict[str, Any]:
    """A CPU step with spread-out time and every knob on: no rule should fire."""
    model = node(
        "model",
        3.0,
        6.0,
        type="Net",
        children=[
            node("model.embed", 0.6, 1.2, type="Embedding"),
            node("model.proj", 0.8, 1.6, type="Linear"),
            node("model.norm", 0.6, 1.2, type="LayerNorm"),
            node("model.head", 0.8, 1.6, type="Linear"),
        ],
    )
    root = node("", 3.0, 6.0, kind="root", children=[model])
    root["total_ms"] = s(10.0)
    data = empty_session_dict("clean (crafted)")
    data.update(
        environment={
            "torch": "2.13.0",
            "device": "cpu",
            "threads": 2,
            "knobs": {"autocast": True, "tf32": True, "compile": True, "channels_last": True},
        },
        config={"steps": 5, "warmup": 2, "timing": "perf_counter", "notes": []},
        phases={
            "data": s(0.5),
            "forward": s(3.0),
            "backward": s(6.0),
            "optimizer": s(0.4),
            "other": s(0.1),
        },
        step_ms=s(10.0),
        tree=root,
        inference={
            "train_step_ms": 10.0,
            "inference_ms": 3.0,
            "train_inference_ratio": 3.3,
            "backward_forward_ratio": 2.0,
        },
    )
    return data


def copy_of(session: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(session)


HF_TRAINER = "/venv/lib/python3.11/site-packages/transformers/trainer.py"


def library_session():
    """The slow session plus a sync inside an installed package (Hugging Face's Trainer)."""
    session = slow_session()
    session["syncs"].append(
        {
            "kind": "bool",
            "op": "if (self.args.logging_nan_inf_filter and not is_torch_xla_available() and",
            "file": HF_TRAINER,
            "line": 1919,
            "function": "_inner_training_loop",
            "count": 20,
            "per_step": 2.0,
            "phase": "other",
            "stall_ms": 0.3,
            "would_sync_on_cuda": True,
            "library": "transformers",
            "user_file": TRAIN,
            "user_line": 120,
            "user_function": "main",
            "user_op": "trainer.train()",
        }
    )
    return session


def anomaly_session():
    """The slow session run with autograd anomaly detection left on."""
    session = slow_session()
    session["anomaly_detection"] = {"stack_depth": 30, "us_per_node": 60.0,
                                    "nodes_per_step": 300.0, "ms_per_step": 18.0}  # fmt: skip
    return session


def decode_session():
    """The slow session as an autoregressive loop feeding its whole sequence back."""
    session = slow_session()
    session["config"]["step_boundary"] = "module"
    session["steps"] = [{"index": i, "wall_ms": 60.0 + 0.5 * i, "input_shape": [1, 8 + i],
                         "detailed": False} for i in range(60)]  # fmt: skip
    return session


def between_steps_session():
    """The slow session writing a checkpoint every step (sampled in the other phase)."""
    session = slow_session()
    session["phases"]["other"] = {"median": 40.0, "mean": 40.0}
    session["other_lines"] = [{"file": "/x/train.py", "line": 90, "location": "train.py:90",
                               "code": "torch.save(model.state_dict(), p)", "ms_per_step": 35.0}]  # fmt: skip
    return session


def library_loop_session():
    """The slow session whose script hands its loop to a library (``trainer.train()``): the
    work between steps is the library loop's own lines."""
    session = slow_session()
    session["phases"]["other"] = {"median": 40.0, "mean": 40.0}
    lib = "/v/site-packages/transformers/trainer.py"
    session["other_lines"] = [{
        "file": "/x/train.py", "line": 20, "location": "train.py:20", "code": "trainer.train()",
        "ms_per_step": 30.0, "encloses_loop": True,
        "inside": [{"file": lib, "line": 1958, "location": "trainer.py:1958",
                    "function": "_run_epoch", "code": "self._maybe_log_save_evaluate(",
                    "ms_per_step": 20.0, "package": "transformers", "via": None}]}]  # fmt: skip
    return session


def python_lines_session(code="obs, reward, done, trunc, info = env.step(action)", hot_ms=None):
    """The slow session whose loop steps an environment in Python in the forward phase;
    ``hot_ms``: the same line also measured by the hot lines."""
    session = slow_session()
    session["python_lines"] = [{
        "file": "/w/rl.py", "line": 41, "function": "rollout", "location": "rl.py:41",
        "code": code, "ms_per_step": 0.4 * session["step_ms"]["median"],
        "via": [{"file": "/env/cartpole.py", "line": 172, "function": "step", "ms_per_step": 1.0}],
    }]  # fmt: skip
    if hot_ms is not None:
        session["hot_lines"] = {"lines": [{
            "file": "/w/rl.py", "line": 41, "owner": "", "total_ms": {"mean": hot_ms},
            "forward_ms": {"mean": hot_ms}, "backward_ms": {"mean": 0.0}, "calls_per_step": 1,
            "torch_calls_per_step": 3, "top_ops": []}]}  # fmt: skip
    return session


def optimizer_session(fused=None, device="cpu", dtype="float32"):
    """The slow session, on ``device``, whose unfused AdamW step (of ``dtype``) takes 30%."""
    session = slow_session()
    session["environment"]["device"] = device
    session["phases"]["optimizer"] = {"median": 30.0, "mean": 30.0}
    session["environment"]["optimizers"] = [{
        "type": "AdamW", "fused_supported": True, "foreach_supported": True, "fused": fused,
        "foreach": None, "device": "cpu", "params": 50, "numel": 124_000_000, "dtype": dtype}]
    return session


def checkpointing_session():
    """The slow session whose decoder layers are checkpointed: 4 ms of forward re-run each."""
    from torchdoctor.session_read import walk

    session = copy_of(slow_session())
    for node, _ in walk(session["tree"]):
        if str(node.get("path")).startswith("model.decoder.layers.") and node["path"][-1].isdigit():
            node["recomputed_ms"] = s(4.0)
    return session


def oversubscribed_session() -> dict[str, Any]:
    """A CPU step of two Hogwild workers that ran at once, each with the 4 cores' threads."""
    session = slow_session()
    session["environment"].update(device="cpu", threads=4, cpus=4)
    session["children"] = [{"name": "train", "index": i, "threads": 4, "started_at": 0.0,
                            "ended_at": 9.0} for i in (0, 1)]  # fmt: skip
    return session


def periodic_session():
    """An evaluation every 20 steps (steps 19 and 39 of 60): 300 ms more, between steps."""
    steps = [{"index": i, "wall_ms": 400.0 if i % 20 == 19 else 100.0, "detailed": False,
              "phases": {"other": 310.0 if i % 20 == 19 else 10.0}} for i in range(60)]  # fmt: skip
    return {**clean_session(), "steps": steps}


def recompile_session():
    """The slow session whose compiled model recompiled in two later steps."""
    session = slow_session()
    session["compile"] = {"compile_ms": 3000.0, "steps_with_compile": 3, "steps": [
        {"index": 0, "compile_ms": 1000.0}, {"index": 4, "compile_ms": 1000.0},
        {"index": 9, "compile_ms": 1000.0}]}  # fmt: skip
    return session
