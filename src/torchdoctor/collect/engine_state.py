"""What the engine is set to while the user's code runs: the knobs read at run time, and the
settings of the DataLoaders it iterates.

The profiler records them in ``environment.knobs`` (the advice does not prescribe a knob in
use), and ``torchdoctor tune`` skips a trial of a knob the script already turns on. One home
for each reading, so both agree.

Example:
    >>> import torch
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     autocast_dtype()
    'bfloat16'
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

from torchdoctor.collect.syncs_frames import user_code_frame, user_frame


def autocast_dtype(device_type: str | None = None) -> str | None:
    """The dtype autocast runs in right now ("bfloat16", "float16") on ``device_type`` (default:
    CUDA, then CPU); None when it is off (or the device type is unknown to torch).

    Example:
        >>> autocast_dtype("cpu") is None
        True
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     autocast_dtype("cpu"), autocast_dtype("cuda")
        ('bfloat16', None)
    """
    for device in (device_type,) if device_type else ("cuda", "cpu"):
        try:
            if torch.is_autocast_enabled(device):
                return str(torch.get_autocast_dtype(device)).replace("torch.", "")
        except (RuntimeError, TypeError, AttributeError):  # an unknown device type
            continue
    return None


def note_autocast(knobs: dict[str, Any]) -> None:
    """Record in ``knobs`` whether autocast is on now (``knobs["autocast"]``) and in which
    dtype (``knobs["autocast_dtype"]``).

    Example:
        >>> knobs = {"autocast": None}
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     note_autocast(knobs)
        >>> knobs
        {'autocast': True, 'autocast_dtype': 'bfloat16'}
    """
    dtype = autocast_dtype()
    knobs["autocast"] = dtype is not None
    if dtype is not None:
        knobs["autocast_dtype"] = dtype


def note_double_backward(knobs: dict[str, Any], graph_kept: bool) -> None:
    """A backward pass begins (``graph_kept``: with ``create_graph=True``): the first such pass
    is noted in ``knobs["gradient_graph"]`` (``"file.py:line"``, the user's line), and a pass
    after it in ``knobs["double_backward"]`` (the same site): the run differentiates a
    gradient (a gradient penalty, a PINN's derivatives, MAML's inner step, a Hessian), which
    modules compiled with torch.compile refuse ("does not currently support double
    backward"). A first-order ``create_graph`` pass alone (no pass after it) is none.

    Example:
        >>> knobs = {"gradient_graph": None, "double_backward": None}
        >>> note_double_backward(knobs, True); knobs["double_backward"] is None
        True
        >>> note_double_backward(knobs, False); knobs["double_backward"] == knobs["gradient_graph"]
        True
    """
    if knobs.get("gradient_graph") is None:
        if graph_kept:
            file, line, _ = user_frame(sys._getframe(1))
            knobs["gradient_graph"] = f"{os.path.basename(file)}:{line}"
    elif knobs.get("double_backward") is None:
        knobs["double_backward"] = knobs["gradient_graph"]


def channels_last_input(args: Any) -> bool | None:
    """Whether a convolution's 4-D input is stored channels_last (None: no 4-D tensor input).

    Example:
        >>> x = torch.zeros(1, 3, 4, 4)
        >>> channels_last_input((x,)), channels_last_input((x.to(memory_format=torch.channels_last),))
        (False, True)
    """
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if x is None or x.dim() != 4:
        return None
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def loader_settings(iterator: Any) -> dict[str, Any]:
    """A DataLoader iterator's ``num_workers``, ``persistent_workers`` and ``pin_memory``.

    Example:
        >>> loader = torch.utils.data.DataLoader([1, 2], num_workers=0)
        >>> loader_settings(iter(loader))
        {'num_workers': 0, 'persistent_workers': False, 'pin_memory': False}
    """
    return {
        "num_workers": int(getattr(iterator, "_num_workers", 0) or 0),
        "persistent_workers": bool(getattr(iterator, "_persistent_workers", False)),
        "pin_memory": bool(getattr(iterator, "_pin_memory", False)),
    }


def loader_site(frame: Any) -> tuple[tuple[str, Any], ...]:
    """``(("site", (file, function's first line, line)),)`` of the user's code that fetches
    a batch, from ``frame`` outward (empty without one): a lint finding on a ``DataLoader(...)``
    call in the same function is about this loader (minGPT's ``Trainer.run`` builds and iterates
    its training loader, with workers; ``eval_split`` its evaluation's, without).

    Example:
        >>> import sys
        >>> (name, (file, first, line)), = loader_site(sys._getframe())
        >>> name, file.startswith("<doctest"), first <= line
        ('site', True, True)
        >>> loader_site(None)
        ()
    """
    user = user_code_frame(frame)
    if user is None:
        return ()
    code = user.f_code
    return (("site", (code.co_filename, code.co_firstlineno, user.f_lineno or 0)),)


#: frameworks whose loop calls ``optimizer.step()`` for the user, by the module that loop lives
#: in: the advice says where such a framework takes the optimizer's settings
LOOP_DRIVERS = (
    ("transformers.trainer", "transformers"),
    ("lightning.pytorch", "lightning"),
    ("pytorch_lightning", "lightning"),
    ("stable_baselines3", "stable_baselines3"),
    ("skorch", "skorch"),  # (its nets build their DataLoaders from iterator_train__* arguments)
)


def loop_driver(frame: Any) -> str | None:
    """The framework (``"transformers"``: the Hugging Face Trainer, ``"lightning"``) whose code
    is on the stack from ``frame`` outwards, None when the user's own loop calls.

    Example:
        >>> import sys
        >>> loop_driver(sys._getframe()) is None
        True
    """
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        for prefix, driver in LOOP_DRIVERS:
            if name == prefix or name.startswith(prefix + "."):
                return driver
        frame = frame.f_back
    return None


def optimizer_settings(optimizer: Any) -> dict[str, Any]:
    """What an optimizer runs as: its class, whether its class has a fused (one kernel for all
    parameters) and a foreach implementation for its parameters' device, the ``fused`` and
    ``foreach`` it was given (None: the default), its device and parameter count, and the
    framework whose loop steps it (``driver``: ``loop_driver`` of the caller; called at the
    optimizer's first step, from its hook).

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> settings = optimizer_settings(torch.optim.AdamW(net.parameters()))
        >>> settings["type"], settings["fused_supported"], settings["fused"], settings["numel"]
        ('AdamW', True, None, 6)
    """
    from torch.optim import optimizer as _optimizer

    with torch._C.DisableTorchFunction():  # (its reads are no user line's torch calls)
        return _settings(optimizer, _optimizer, loop_driver(sys._getframe(1)))


def _settings(optimizer: Any, _optimizer: Any, driver: str | None) -> dict[str, Any]:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    device = params[0].device.type if params else "cpu"
    supported = _optimizer._get_fused_kernels_supported_devices()
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    return {
        "type": type(optimizer).__name__,
        "fused_supported": "fused" in optimizer.defaults and device in supported
        and all(p.is_floating_point() for p in params),
        "foreach_supported": "foreach" in optimizer.defaults,
        "fused": group.get("fused"),
        "foreach": group.get("foreach"),
        "momentum": group.get("momentum"),  # (SGD: without it, fused gains nothing)
        "history_size": group.get("history_size"), "max_iter": group.get("max_iter"),  # (LBFGS)
        "device": device,
        "params": len(params),
        "numel": sum(p.numel() for p in params),
        "dtype": _main_dtype(params),
        "default_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "driver": driver,
    }  # fmt: skip


def _main_dtype(params: list[Any]) -> str | None:
    """The dtype most of the parameters' elements have (``"float64"``: a model trained in
    double precision), None without parameters."""
    counts: dict[str, int] = {}
    for p in params:
        name = str(p.dtype).removeprefix("torch.")
        counts[name] = counts.get(name, 0) + p.numel()
    return max(counts, key=counts.__getitem__) if counts else None


def stack_depth(frame: Any) -> int:
    """Python frames from ``frame`` outwards (what anomaly detection walks at every autograd
    node it records).

    Example:
        >>> import sys
        >>> stack_depth(sys._getframe()) >= 1
        True
    """
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


#: autograd nodes of the chain :func:`anomaly_cost_us` times (forward and backward)
ANOMALY_PROBE_NODES = 40


def anomaly_cost_us(depth: int, repeats: int = 5) -> float:
    """What anomaly detection adds per autograd node, in host microseconds, measured here: a
    chain of ANOMALY_PROBE_NODES tiny ops, forward and backward, run ``depth`` Python frames
    deep (it records the Python stack of every node it creates, so its cost grows with the
    depth; it checks every gradient for NaN in backward), with anomaly detection on and off
    (best of ``repeats`` each; the caller's setting is restored).

    Example:
        >>> cost = anomaly_cost_us(depth=30)  # (a timing: its size is the machine's)
        >>> cost >= 0.0, torch.is_anomaly_enabled()  # ... and the setting is as it was
        (True, False)
    """
    import time

    leaf = torch.ones(4, requires_grad=True)

    def chain() -> None:
        y = leaf
        for _ in range(ANOMALY_PROBE_NODES - 1):
            y = y * 1.0
        y.sum().backward()

    def deep(level: int) -> float:
        if level > 1:
            return deep(level - 1)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter_ns()
            chain()
            best = min(best, time.perf_counter_ns() - start)
        return best

    was_on, was_checking = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
    try:
        torch.set_anomaly_enabled(True, True)
        on = deep(max(1, depth - stack_depth(_caller())))
        torch.set_anomaly_enabled(False)
        off = deep(max(1, depth - stack_depth(_caller())))
    finally:
        torch.set_anomaly_enabled(was_on, was_checking)
    return max(0.0, on - off) / ANOMALY_PROBE_NODES / 1e3


def _caller() -> Any:
    import sys

    return sys._getframe(1)


class AnomalyProbe:
    """What the profiler reads of anomaly detection in detailed steps: whether it is on at the
    outermost module calls, the Python stack depth module forwards run at (sampled at up to
    SAMPLES module calls; the cost per autograd node grows with it), and the autograd nodes
    made per step (``torch._C._autograd._get_sequence_nr`` at the step's start and end).

    Example:
        >>> probe = AnomalyProbe()
        >>> with torch.autograd.set_detect_anomaly(True):
        ...     probe.outermost(); probe.step_began()
        ...     y = (torch.ones(2, requires_grad=True) * 2).sum()
        ...     probe.step_ended()
        >>> probe.seen, probe.nodes_per_step()
        (True, 2.0)
    """

    SAMPLES = 256

    def __init__(self) -> None:
        self.seen = False  # on at some outermost call
        self.probing = False  # sample the depth at the next module calls
        self.depths: list[int] = []
        self.nodes = 0
        self.steps = 0
        self._start: int | None = None

    def outermost(self) -> None:
        if torch.is_anomaly_enabled():
            if not self.seen:
                self.seen = True
                self._start = _sequence_nr()
            self.probing = len(self.depths) < self.SAMPLES

    def sample(self, frame: Any) -> None:
        self.depths.append(stack_depth(frame))
        self.probing = len(self.depths) < self.SAMPLES

    def step_began(self) -> None:
        self._start = _sequence_nr() if self.seen else None

    def step_ended(self) -> None:
        if self._start is not None:
            self.nodes += _sequence_nr() - self._start
            self.steps += 1
            self._start = None

    def nodes_per_step(self) -> float:
        return self.nodes / self.steps if self.steps else 0.0

    def summary(self) -> dict[str, Any] | None:
        """``{"stack_depth", "us_per_node", "nodes_per_step", "ms_per_step"}`` (the cost per
        node measured now, :func:`anomaly_cost_us`), or None when it was never on."""
        if not self.seen or not self.steps:
            return None
        depths = sorted(self.depths) or [40]
        depth = depths[len(depths) // 2]
        us = anomaly_cost_us(depth)
        nodes = self.nodes_per_step()
        return {"stack_depth": depth, "us_per_node": us, "nodes_per_step": nodes,
                "ms_per_step": us * nodes / 1e3}  # fmt: skip


_sequence_nr = torch._C._autograd._get_sequence_nr


#: Hugging Face config attributes of the attention weights' dropout, which runs inside
#: ``scaled_dot_product_attention`` (its ``dropout_p``) when the model uses SDPA: no module
ATTENTION_DROPOUT_ATTRIBUTES = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def attention_dropout(module: Any) -> dict[str, Any] | None:
    """A Hugging Face model's attention dropout when its attention runs in SDPA and the dropout
    is on (``config.attention_probs_dropout_prob`` ... > 0): ``{"model", "attribute", "p",
    "attn_implementation"}``; None for any other module (eager attention has a Dropout module,
    which the tree shows).

    Example:
        >>> import types
        >>> net = torch.nn.Linear(2, 2)
        >>> net.config = types.SimpleNamespace(attention_probs_dropout_prob=0.1, _attn_implementation="sdpa")
        >>> attention_dropout(net)["p"], attention_dropout(torch.nn.Linear(2, 2))
        (0.1, None)
    """
    try:
        config = module.__dict__.get("config")  # (no nn.Module.__getattr__ on other modules)
        if config is None:
            return _multihead_dropout(module)
        implementation = getattr(config, "_attn_implementation", None)
        if implementation not in ("sdpa", None):
            return None
        for name in ATTENTION_DROPOUT_ATTRIBUTES:
            p = getattr(config, name, None)
            if isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0:
                return {"model": type(module).__name__, "attribute": name, "p": float(p),
                        "attn_implementation": implementation}  # fmt: skip
    except Exception:  # (a config whose properties raise: nothing known)
        return None
    return None


def _multihead_dropout(module: Any) -> dict[str, Any] | None:
    """``torch.nn.MultiheadAttention`` layers inside ``module`` with ``dropout > 0`` (as
    ``nn.Transformer``'s default 0.1 makes them): their attention-weight dropout runs inside
    the layer, no Dropout module shows it (a Lightning Fabric language model: 38 ms of a 178 ms
    step, against 28 ms for its 15 Dropout modules). The largest ``p``, or None.

    Example:
        >>> net = torch.nn.TransformerEncoderLayer(8, 2, dropout=0.2)
        >>> _multihead_dropout(net)["attribute"], _multihead_dropout(torch.nn.Linear(2, 2))
        ('dropout', None)
    """
    if not isinstance(module, torch.nn.Module):
        return None
    ps = [float(m.dropout) for m in module.modules()
          if isinstance(m, torch.nn.MultiheadAttention) and float(m.dropout or 0.0) > 0]  # fmt: skip
    if not ps:
        return None
    return {"model": type(module).__name__, "attribute": "dropout", "p": max(ps),
            "attn_implementation": "nn.MultiheadAttention", "layers": len(ps)}



#: a module's own boolean switch for fused attention (lucidrains' ``Attend.flash``, timm's
#: ``Attention.fused_attn``, ...): read once, when the module is first seen
FUSED_ATTENTION_SWITCHES = ("flash", "use_flash", "flash_attn", "use_flash_attn", "fused_attn",
                            "use_fused_attn", "use_sdpa", "sdpa")  # fmt: skip


def attention_switch(module: Any) -> dict[str, Any] | None:
    """A module's switch for fused attention when it is off: its own boolean attribute
    (x-transformers' ``Attend(flash=False)``, its default; timm's ``fused_attn``) as
    ``{"attribute": "flash", "value": False}``, or a Hugging Face model's eager attention
    (``{"attribute": "config._attn_implementation", "value": "eager"}``, with its config's
    attention ``dropout`` when above 0); None otherwise.

    Example:
        >>> class Attend(torch.nn.Module):
        ...     def __init__(self, flash=False):
        ...         super().__init__()
        ...         self.flash = flash
        >>> attention_switch(Attend()), attention_switch(Attend(flash=True))
        ({'attribute': 'flash', 'value': False}, None)
    """
    state = getattr(module, "__dict__", None) or {}  # (no nn.Module.__getattr__: its own)
    for name in FUSED_ATTENTION_SWITCHES:
        if state.get(name) is False:
            return {"attribute": name, "value": False}
    try:  # (a config object whose attribute lookups raise: nothing known)
        return _eager_attention(state.get("config"))
    except Exception:
        return None


def _eager_attention(config: Any) -> dict[str, Any] | None:
    if config is not None and getattr(config, "_attn_implementation", None) == "eager":
        found = {"attribute": "config._attn_implementation", "value": "eager"}
        for name in ATTENTION_DROPOUT_ATTRIBUTES:  # (eager attention drops its weights with
            p = getattr(config, name, None)  # F.dropout: no Dropout module shows it)
            if isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0:
                found["dropout"] = float(p)
                break
        return found
    return None
