"""Rule ``engine-knobs``: precision and engine settings not in use (seeds 000, 001).

Which knobs are on is read from ``environment["knobs"]`` (or ``config["knobs"]``): a dict with
``autocast``, ``tf32``, ``channels_last``, ``compile`` set to true / false / null (unknown).
``compile`` is also inferred from ``OptimizedModule`` nodes in the tree. A knob known to be on
is never advised. Savings are Amdahl over the measured forward + backward share with the
remedy's stated speedup range (TF32 on CUDA only, autocast on CUDA or on a CPU with bf16 units,
there a bound over its matmul and convolution modules; channels_last only when the tree
has a Conv2d/Conv3d module, over the time of the convolutions and batch norms, at least 10% of
the step),
and each says how to measure it instead: ``torchdoctor tune SCRIPT``. When the session holds a
tune (``session["tune"]``, from ``torchdoctor tune`` or merged by ``torchdoctor report``), the
knobs it measured get their measured saving instead (``knobs_measured.py``).

Example:
    >>> engine_knobs({"tree": None, "phases": {}})
    []
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    CHANNELS_LAST_VIEW,
    CPU_BF16_NOTE,
    SPEEDUPS,
    Advice,
    amdahl_saving,
    center,
    compile_on_cpu,
    fmt_ms,
    is_cuda,
    one_step_run,
    pct,
    saving_step_ms,
    tree_step_ms,
    walk,
    with_saving,
)
from torchdoctor.analyze.advice.knobs_bf16 import (
    SMALL_CALL_MS,
    bf16_bound,
    bf16_parts,
    mean_call_ms,
    outermost_ms,
)
from torchdoctor.analyze.advice.knobs_layout import CONV_ND, layout_kinds_bound, layout_realized
from torchdoctor.analyze.advice.knobs_measured import measured, measured_knob_advice
from torchdoctor.analyze.advice.tune_command import tune_target

#: forward + backward must be at least this share of the step for a knob to be worth it
MIN_FRACTION = 0.30
#: ... and compile when the work it can fuse (the step less its library kernels) is this share
MIN_FUSABLE_FRACTION = 0.10
#: module types that make a net a conv net for channels_last (``knobs_layout.CONV_ND``)
_CONV_ND = CONV_ND
#: ... and the modules whose time channels_last changes: those and their batch norms
#: (pooling too: on a CPU max pooling of NCHW maps is a slow kernel, channels_last a fast one:
#: a Lightning CNN's two MaxPool2d were 26% of its step, and channels_last saved 33% of it)
_CHANNELS_LAST_PART = re.compile(
    r"^(Lazy)?(Conv(Transpose)?|BatchNorm|SyncBatchNorm|(Adaptive)?(Max|Avg)Pool)[23]?d?$")
#: "forward + backward" as the rule words it, not after a possessive (a cited measurement's)
_RULES_FORWARD_BACKWARD = re.compile(r"(?<!'s )forward \+ backward")
_POOLING = re.compile(r"^(Adaptive)?(Max|Avg)Pool[23]d$")
_CONVOLUTION = CONV_ND
#: channels_last is advised when those take at least this share of the step
MIN_CONV_FRACTION = 0.10
#: the cause of each knob's advice (another rule prescribing the same remedy merges with it)
CAUSES = {"autocast": "bf16-autocast", "tf32": "tf32", "channels_last": "channels_last",
          "compile": "torch.compile"}  # fmt: skip

_KNOBS: dict[str, dict[str, Any]] = {
    "autocast": {
        "speedup": "bf16_autocast",
        "title": "Run forward and backward under bf16 autocast",
        "fix": "with torch.autocast('cuda', dtype=torch.bfloat16): loss = model(x) ... "
        "(keep the loss and optimizer in fp32; check the loss curve matches).",
        "code": 'with torch.autocast(device_type="cuda", dtype=torch.bfloat16):\n'
        "    loss = criterion(model(x), y)",
        "ref": "torch.autocast",
    },
    "tf32": {
        "speedup": "tf32",
        "title": "Allow TF32 for fp32 matmuls and convolutions",
        "fix": "torch.backends.cuda.matmul.allow_tf32 = True; "
        "torch.backends.cudnn.allow_tf32 = True (or torch.set_float32_matmul_precision('high')).",
        "code": 'torch.set_float32_matmul_precision("high")',
        "ref": "torch.set_float32_matmul_precision",
    },
    "channels_last": {
        "speedup": "channels_last",
        "title": "Use channels_last memory format for the conv net",
        "fix": "model = model.to(memory_format=torch.channels_last); same for the input batch."
        + CHANNELS_LAST_VIEW,
        "code": "model = model.to(memory_format=torch.channels_last)\n"
        "x = x.to(memory_format=torch.channels_last)",
        "ref": "torch.channels_last",
    },
    "compile": {
        "speedup": "compile",
        "title": "torch.compile the model",
        "fix": "model = torch.compile(model) (first steps are slower while it compiles; "
        "avoid graph breaks such as .item() in forward).",
        "code": "model = torch.compile(model)",
        "ref": "torch.compile",
    },
}


def _knob_state(session: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for section in ("config", "environment"):
        knobs = (session.get(section) or {}).get("knobs")
        if isinstance(knobs, Mapping):
            state.update({k: v for k, v in knobs.items() if v is not None})
    types = {str(n.get("type") or "") for n, _ in walk(session.get("tree"))}
    if any("OptimizedModule" in t for t in types):
        state["compile"] = True
    state["_conv"] = any(_CONV_ND.match(t) for t in types)
    tree = session.get("tree")
    state["_modules"] = not tree or any(  # (no tree: unknown, so assume a model)
        n.get("kind", "module") == "module" and n.get("path") for n, _ in walk(tree)
    )
    return state


#: modules whose time is one library kernel (a matmul, a convolution, a recurrent cell, a
#: gather): torch.compile fuses the work around them, not them
_KERNEL_MODULE = re.compile(
    r"^(Lazy)?(Linear|Bilinear|NonDynamicallyQuantizableLinear|Conv1D|Conv(Transpose)?[123]d|"
    r"(LSTM|GRU|RNN)(Cell)?|MultiheadAttention|Embedding(Bag)?)$"
)


def _kernel_ms(session: Mapping[str, Any]) -> float:
    """Mean ms per step in modules that are one library kernel (:data:`_KERNEL_MODULE`),
    outermost ones counted (MultiheadAttention, not also its out_proj).

    Example:
        >>> tree = {"type": None, "children": [
        ...     {"type": "Linear", "total_ms": {"mean": 5.0}, "children": []},
        ...     {"type": "GELU", "total_ms": {"mean": 1.0}, "children": []},
        ...     {"type": "MultiheadAttention", "total_ms": {"mean": 3.0}, "children": [
        ...         {"type": "NonDynamicallyQuantizableLinear", "total_ms": {"mean": 1.0}}]}]}
        >>> _kernel_ms({"tree": tree})
        8.0
    """
    return outermost_ms(session, _KERNEL_MODULE)


def _conv_ms(session: Mapping[str, Any]) -> float:
    """Mean ms per step of the convolutions, batch norms and pooling layers in the tree (what
    channels_last changes). A node is counted when none of its descendants is one: a model's own ``Conv``
    block (YOLO's conv + batch norm + activation) counts as its Conv2d and BatchNorm2d, not
    twice.

    Example:
        >>> tree = {"type": None, "children": [
        ...     {"type": "Conv2d", "total_ms": {"mean": 3.0}, "children": []},
        ...     {"type": "BatchNorm2d", "total_ms": {"mean": 1.0}, "children": []},
        ...     {"type": "Linear", "total_ms": {"mean": 5.0}, "children": []},
        ...     {"type": "Conv", "total_ms": {"mean": 2.5}, "children": [
        ...         {"type": "Conv2d", "total_ms": {"mean": 2.0}, "children": []}]}]}
        >>> _conv_ms({"tree": tree})
        6.0
    """

    def innermost(node: Mapping[str, Any]) -> tuple[float, bool]:
        """(ms of the innermost matches under ``node``, whether there was any)."""
        ms, found = 0.0, False
        for child in node.get("children") or ():
            child_ms, child_found = innermost(child)
            ms, found = ms + child_ms, found or child_found
        if not found and _CHANNELS_LAST_PART.match(str(node.get("type") or "")):
            return center(node.get("total_ms")), True
        return ms, found

    tree = session.get("tree")
    return innermost(tree)[0] if tree else 0.0


#: a compiled module's guards and graph call cost tens of microseconds a call: a forward this
#: short per call gets slower (the review: a 2-layer policy, 36 us eager, 87 us compiled)
TINY_CALL_MS = 0.25


def _tiny_calls(session: Mapping[str, Any]) -> bool:
    """Every outermost module's forward takes under TINY_CALL_MS a call (an RL policy called
    on one observation per environment step), without the profiler's share of the detailed
    step (its hooks and audit inflate small calls most: pytorch/examples reinforce's 36 us
    forward read 270 us there).

    Example:
        >>> tree = {"children": [{"kind": "module", "forward_ms": {"mean": 3.0},
        ...                       "calls_per_step": 30}]}
        >>> _tiny_calls({"tree": tree}), _tiny_calls({"tree": {"children": []}})
        (True, False)
    """
    calls = [(center(c.get("forward_ms")), float(c.get("calls_per_step") or 0.0))
             for c in (session.get("tree") or {}).get("children") or ()
             if c.get("kind") == "module"]  # fmt: skip
    detailed = tree_step_ms(session)
    scale = min(1.0, saving_step_ms(session) / detailed) if detailed > 0 else 1.0
    return bool(calls) and all(n > 0 and scale * ms / n < TINY_CALL_MS for ms, n in calls)


def engine_knobs(session: Mapping[str, Any]) -> list[Advice]:
    """Advice for each precision/engine knob not known to be in use.

    Example:
        >>> s = {"step_ms": {"median": 10.0}, "phases": {"forward": {"median": 4.0},
        ...      "backward": {"median": 4.0}}, "environment": {"device": "cpu"}}
        >>> [a.title for a in engine_knobs(s)]
        ['torch.compile the model']
    """
    advice = measured_knob_advice(session)
    step = tree_step_ms(session)
    unprofiled = saving_step_ms(session)  # (savings are of the step without the profiler)
    phases = session.get("phases") or {}
    compute = center(phases.get("forward")) + center(phases.get("backward"))
    if step <= 0 or compute < MIN_FRACTION * step:
        return advice
    state = _knob_state(session)
    cuda = is_cuda(session)
    # a one-shot run (no step boundary) calling its model once or twice: compiling costs
    # seconds to tens of seconds, more than such calls can give back
    once = one_step_run(session) and max(
        (float(c.get("calls_per_step") or 0.0)
         for c in (session.get("tree") or {}).get("children") or () if c.get("kind") == "module"),
        default=0.0,
    ) <= 2  # fmt: skip
    wanted = [] if once or _tiny_calls(session) else ["compile"]
    if cuda:
        wanted = ["autocast", "tf32", *wanted]
    elif (session.get("environment") or {}).get("bf16_native") is True:  # (AMX: bf16 units)
        wanted = ["autocast", *wanted]
    if state["_conv"]:
        wanted.append("channels_last")
    script = tune_target(session)
    for knob in wanted:
        if state.get(knob) is True or measured(session, knob):
            continue
        part, what = compute, ("forward + backward are" if center(phases.get("backward"))
                               else "the forward passes are")  # fmt: skip
        if knob == "autocast" and not cuda:  # (a CPU's bf16 units: its matmuls and convs)
            part, matmuls, convs = bf16_parts(session, _kernel_ms(session), compute)
            what = "its matmul and convolution modules " + (
                "and measured matmul lines are" if part > min(_kernel_ms(session), compute) else "are")
            if part < MIN_CONV_FRACTION * step:
                continue
        if knob == "channels_last":  # it changes the convolutions (and batch norms) only
            part = _conv_ms(session)
            if part < MIN_CONV_FRACTION * step:
                continue
            types = [str(n.get("type")) for n, _ in walk(session.get("tree"))]
            parts = ["the convolutions"] + (["batch norms"] if any("BatchNorm" in t for t in types)
                                            else []) + (["pooling layers"] if any(
                                                _POOLING.match(t) for t in types) else [])  # fmt: skip
            what = (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]) + " are"
        kernels = hooks = 0.0
        fusable = part
        if knob == "compile":  # it fuses the elementwise work and overheads around the
            # matmuls, convolutions and recurrent cells, not those kernels (a conv net at 98%
            # of its step in convolutions was promised 1.1-1.5x on all of it); the profiler's
            # own cost sits in the (self) rows it would fuse: not the code's (time_sequence_
            # prediction's 999 LSTMCell calls: 1,154 of a 1,198 ms (self) row were hooks)
            kernels = min(_kernel_ms(session), part)
            hooks = min(max(0.0, step - unprofiled), part - kernels)
            fusable = part - kernels - hooks
            cpu_convs = 0.0 if cuda else min(outermost_ms(session, CONV_ND), kernels)
            if fusable + cpu_convs < MIN_FUSABLE_FRACTION * unprofiled:  # (on a CPU its
                continue  # convolutions gain too: a KarrasUnet compiled measured 1.25x)
        spec = dict(_KNOBS[knob])
        if knob == "compile" and not state["_modules"]:  # plain tensor code, no nn.Module
            spec.update(
                title="torch.compile the step",
                fix="step = torch.compile(step) on the function that computes the loss (first "
                "calls are slower while it compiles; avoid graph breaks such as .item()).",
                code="loss_fn = torch.compile(loss_fn)",
            )
        speedup = SPEEDUPS["compile_cpu" if knob == "compile" and not cuda else spec["speedup"]]
        known_off = state.get(knob) is False
        item = Advice(
            rule="engine-knobs",
            title=spec["title"],
            confidence="medium" if cuda and known_off else "low",
            evidence=[
                f"{knob}: {'off' if known_off else 'not detected'}; {what} "
                f"{fmt_ms(part)} ({pct(part, step):.0f}% of the step)"
                + (f", of which {fmt_ms(kernels)} in matmul, convolution, recurrent and "
                   f"embedding kernels it does not speed up" if kernels > 0 else ""),
                f"expected {speedup.low:g}-{speedup.high:g}x on "
                + (f"the other {fmt_ms(fusable)}" if kernels > 0 else
                   f"{fmt_ms(fusable)} of it" if hooks > 0 else "that part")
                + (f" (the profiler's own {fmt_ms(hooks)} left out)" if hooks > 0 else "")
                + f" ({speedup.source})",
            ],
            fix=f"{spec['fix']} Measure it: torchdoctor tune {script}",
            references=[spec["ref"], "seed 000", "seed 001"],
            code=spec["code"],
            cause=CAUSES[knob],
            generic=True,
        )
        fraction = fusable / unprofiled if knob == "compile" else part / step
        if knob == "compile" and not cuda:  # (on a CPU: measured 0.55-1.32x, no saving stated)
            advice.append(compile_on_cpu(item, unprofiled, min(1.0, fraction)))
            convs = cpu_convs * unprofiled / step
            if convs > 0 and item.saving_range_ms:  # (Inductor's CPU convolutions gain too)
                conv = SPEEDUPS["compile_cpu_conv"]
                item.evidence[0] = item.evidence[0].replace("it does not speed up",
                                                            "it does not fuse")  # fmt: skip
                item.saving_range_ms[1] += amdahl_saving(unprofiled, convs / unprofiled,
                                                         conv.high)  # fmt: skip
                item.evidence.insert(2, f"up to {conv.high:g}x on its convolutions "
                                        f"({fmt_ms(convs)}: {conv.source})")  # fmt: skip
        elif knob == "autocast" and not cuda:  # (a CPU with bf16 units: up to 1.45x)
            item.title = "Run forward and backward under CPU bf16 autocast"
            item.fix = item.fix.replace("'cuda'", "'cpu'").replace(
                "torchdoctor tune", "torchdoctor tune --knobs bf16_autocast") + "." + CPU_BF16_NOTE
            item.code = (item.code or "").replace('"cuda"', '"cpu"')
            conv = (f"{SPEEDUPS['bf16_autocast_cpu_conv'].high:g}x on its convolutions "
                    f"({fmt_ms(convs)}: {SPEEDUPS['bf16_autocast_cpu_conv'].source}), "
                    if convs > 0 else "")  # fmt: skip
            item.evidence[1] = (
                f"up to {SPEEDUPS['bf16_autocast_cpu_matmul'].high:g}x on its matrix multiplies "
                f"({fmt_ms(matmuls)}: {SPEEDUPS['bf16_autocast_cpu_matmul'].source}), {conv}"
                f"{SPEEDUPS['bf16_autocast_cpu'].high:g}x on the rest of forward + backward"
                if matmuls > 0
                else f"up to {conv}{SPEEDUPS['bf16_autocast_cpu'].high:g}x on "
                + ("the rest of that part" if conv else "that part"))
            advice.append(compile_on_cpu(item, unprofiled, min(1.0, fraction),
                                         "bf16_autocast_cpu"))  # fmt: skip
            bound = bf16_bound(part, matmuls, max(0.0, compute - part), convs)
            item.saving_range_ms = [0.0, min(bound, compute) * unprofiled / step]
            per_call = mean_call_ms(session)
            if per_call is not None and per_call < SMALL_CALL_MS:  # (ranked by a tenth)
                item.bound_realized = None
                item.evidence.append(
                    f"its matrix multiplies and convolutions average {fmt_ms(per_call)} a call "
                    "(forward + backward): at that size the casts cost about what the bfloat16 "
                    "kernels save (nanoGPT at width 64, 0.17 ms a call: 15.9 -> 30.8 ms a step "
                    "under autocast)")  # fmt: skip
        elif knob == "channels_last" and not cuda:  # (on a CPU: measured 0.85-1.16x)
            item.evidence[1] = item.evidence[1].replace(
                f"expected {speedup.low:g}-{speedup.high:g}x", "up to "
                f"{SPEEDUPS['channels_last_cpu'].high:g}x").replace(
                f" ({speedup.source})", "")  # (the CPU's measurements are cited instead)
            advice.append(compile_on_cpu(item, unprofiled, min(1.0, fraction), "channels_last_cpu"))
            layout_kinds_bound(item, session, unprofiled / step if step > 0 else 0.0)
            layout_realized(item, session, bool(center(phases.get("backward"))))
            if any(a.cause == CAUSES["autocast"] for a in advice):  # (both advised: together)
                item.evidence.append(COMPOUND_NOTE)
                item.fix = item.fix.replace("torchdoctor tune", "torchdoctor tune --knobs "
                                            "channels_last,bf16_autocast", 1)  # fmt: skip
        else:
            advice.append(with_saving(item, unprofiled, min(1.0, fraction), speedup))
        if knob == "channels_last":
            slow_backward_note(item, session.get("tree"), step)
        if knob == "autocast" and not center(phases.get("backward")):
            for_inference(item)
        item.heat = min(item.heat, 0.2)  # a generic knob ranks below specific evidence
    return advice


#: why the CPU channels_last advice says to measure it with bf16 autocast too
COMPOUND_NOTE = (
    "with bf16 autocast (advised too) they compound: timm's resnet18 inference on a CPU went "
    "1.30x in channels_last, 1.76x under bf16 autocast, 3.74x with both (clients round 15)"
)


def for_inference(item: Advice) -> None:
    """Word the autocast advice for a run with no backward (inference: a ``generate()`` loop, an
    evaluation script): its title said "forward and backward", its fix kept "the loss and
    optimizer in fp32" and its code computed ``criterion(model(x), y)``, none of which such a
    script has (a Hugging Face ``generate()`` loop on a tiny Llama, round 11).

    Example:
        >>> item = Advice(rule="engine-knobs", title="Run forward and backward under bf16 autocast",
        ...               fix="with torch.autocast('cuda', dtype=torch.bfloat16): loss = model(x) ... "
        ...               "(keep the loss and optimizer in fp32; check the loss curve matches).",
        ...               code="with torch.autocast(...):\\n    loss = criterion(model(x), y)")
        >>> for_inference(item); item.title, item.code.splitlines()[1]
        ('Run the forward passes under bf16 autocast', '    out = model(x)')
        >>> item.evidence = ["up to 3.5x (a linear layer's forward + backward at ViT-tiny's "
        ...                  "shapes 3.31x), 1.45x on the rest of forward + backward"]
        >>> for_inference(item); item.evidence[0][12:62], item.evidence[0][-26:]
        ("a linear layer's forward pass with its gradients a", 'rest of the forward passes')
    """
    item.title = item.title.replace("forward and backward", "the forward passes")
    item.fix = (item.fix or "").replace(
        "loss = model(x) ... (keep the loss and optimizer in fp32; check the loss curve matches)",
        "out = model(x) ... (or around a generate() call; check the outputs match the float32 "
        "ones); with no training, casting the model once, model.to(torch.bfloat16), skips "
        "autocast's casts at every call (a tiny Llama's beam search, generate() on 8 prompts: "
        "1,070 ms in float32, 901 ms under autocast, 722 ms cast)")
    item.code = (item.code or "").replace("loss = criterion(model(x), y)", "out = model(x)")
    # (the rule's own words become the forward passes; a cited measurement keeps what it
    # measured: "a linear layer's forward + backward at ViT-tiny's shapes" read "a linear
    # layer's the forward passes" in timm's validate.py report, round 13)
    item.evidence = [
        _RULES_FORWARD_BACKWARD.sub("the forward passes", e).replace(
            "'s forward + backward", "'s forward pass with its gradients")
        for e in item.evidence
    ]


#: a convolution's backward (input and weight gradients) costs about twice its forward; this
#: many times its forward is a slow kernel path of its memory format
SLOW_BACKWARD = 4.0


def slow_backward_note(item: Advice, tree: Mapping[str, Any] | None, step: float) -> None:
    """Name, in ``item``'s evidence, the convolutions under ``tree`` whose backward is >=
    :data:`SLOW_BACKWARD` x their forward and >= 5% of the step, not explained by padding (a
    map smaller than its kernel: the padded-convolutions remedy's). No saving is stated for
    them: which kernels are slow depends on the shape and the library.

    pytorch/examples fast_neural_style's last layer (32 -> 3 channels, 9x9, 64x64 maps) spends
    79 ms in backward for a 10 ms forward on a CPU (its NCHW input gradient is oneDNN's slow
    path); in channels_last its backward took 11 ms, and `torchdoctor tune --knobs
    channels_last` measured the whole step 1.16x. A 3 -> 64 7x7 stem whose input needs a
    gradient is 4.4x in either layout: measuring is how to tell.

    Example:
        >>> conv = {"path": "net.deconv3", "type": "Conv2d", "kind": "module", "children": [],
        ...         "forward_ms": {"mean": 10.0}, "backward_ms": {"mean": 79.0}}
        >>> item = Advice("engine-knobs", "channels_last", evidence=["its share"])
        >>> slow_backward_note(item, {"children": [conv]}, 470.0)
        >>> item.evidence[1]
        'net.deconv3: backward 79 ms, 7.9x its forward (about 2x is usual): its backward kernel takes a slow path, which the memory format can change (measure it)'
    """
    lines = []
    for node, _ in walk(tree):
        if node.get("children") or not _CONVOLUTION.match(str(node.get("type") or "")):
            continue
        if float((node.get("conv") or {}).get("padding_share") or 0.0) >= 0.5:
            continue  # (its time is padding: see padded-convolutions)
        forward, backward = center(node.get("forward_ms")), center(node.get("backward_ms"))
        if forward > 0 and backward >= SLOW_BACKWARD * forward and backward >= 0.05 * step:
            lines.append(
                f"{node.get('path')}: backward {fmt_ms(backward)}, {backward / forward:.1f}x its "
                "forward (about 2x is usual): its backward kernel takes a slow path, which the "
                "memory format can change (measure it)"
            )
    item.evidence[1:1] = lines[:3]
