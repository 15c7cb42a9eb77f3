"""The engine knobs ``torchdoctor tune`` tries: one table, :data:`KNOBS`. Add a knob here.

A :class:`Knob` says when it applies (``applies(observed) -> reason it does not, or None``,
decided from what the baseline trial saw: module types, device, optimizers, loaders; never
from names), how a trial turns it on without editing the script (hooks called by the trial
harness, ``tuning/harness.py``), and the snippet that turns it on in the user's code.

Hooks a knob may set (each receives the harness's :class:`~torchdoctor.tuning.harness.Trial`):

- ``on_start(trial)``: before the script runs (flags, patched constructors);
- ``on_root(trial, module)``: when an outermost module is first called;
- ``around_call(trial, module) -> context manager``: around each outermost call;
- ``on_inputs(trial, module, args) -> args``: the positional inputs of each outermost call;
- ``on_optimizer(trial, optimizer)``: before an optimizer's first step;
- ``on_loss(trial, tensor) -> tensor``: the tensor ``backward()`` starts from.

A knob may instead set environment variables (``env``) that the trial's process starts with
(``tuning/trial.py``): glibc reads its malloc settings only at start.

Example:
    >>> observed = {"device": "cpu", "cuda_available": False, "roots": [{"params": 10,
    ...             "conv": False}], "optimizers": [], "loaders": [], "backward": True}
    >>> KNOB_BY_NAME["channels_last"].applies(observed)
    'no Conv2d/Conv3d in the model: channels_last only changes convolutions'
    >>> KNOB_BY_NAME["tf32"].applies(observed)
    'needs CUDA: no GPU on this machine'
    >>> KNOB_BY_NAME["bf16_autocast"].applies(observed) is None
    True
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from torchdoctor.analyze.kernel_time import MALLOC_CACHE_ENV

Observed = Mapping[str, Any]


@dataclass(frozen=True)
class Knob:
    """One engine knob: when it applies, how a trial turns it on, and the user's snippet.

    Example:
        >>> KNOB_BY_NAME["compile"].group
        'compile'
    """

    name: str
    title: str
    snippet: str
    applies: Callable[[Observed], str | None]
    group: str = ""  # at most one knob of a group goes into the combination
    hidden: bool = False  # test-only: never offered to users
    on_start: Callable[[Any], None] | None = None
    on_root: Callable[[Any, torch.nn.Module], None] | None = None
    around_call: Callable[[Any, torch.nn.Module], Any] | None = None
    on_inputs: Callable[[Any, torch.nn.Module, tuple], tuple] | None = None
    on_optimizer: Callable[[Any, Any], None] | None = None
    on_loss: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    env: tuple[tuple[str, str], ...] = ()  # the trial's process starts with these variables


# -- applicability ----------------------------------------------------------------------------
def _cuda(observed: Observed) -> str | None:
    if not observed.get("cuda_available"):
        return "needs CUDA: no GPU on this machine"
    if observed.get("device") != "cuda":
        return f"needs CUDA: the model runs on {observed.get('device') or 'cpu'}"
    return None


def _model(observed: Observed) -> str | None:
    if not any(r.get("params") for r in observed.get("roots") or ()):
        return "no nn.Module with parameters was called"
    return None


def _conv(observed: Observed) -> str | None:
    if not any(r.get("conv") for r in observed.get("roots") or ()):
        return "no Conv2d/Conv3d in the model: channels_last only changes convolutions"
    return None


def _first(*checks: Callable[[Observed], str | None]) -> Callable[[Observed], str | None]:
    def applies(observed: Observed) -> str | None:
        for check in checks:
            reason = check(observed)
            if reason:
                return reason
        return None

    return applies


def _bf16(observed: Observed) -> str | None:
    if observed.get("device") == "cuda" and not observed.get("bf16_supported", True):
        return "this GPU has no bf16 support"
    return _autocast_off(observed)


def _autocast_off(observed: Observed) -> str | None:
    """A precision knob is no trial when the script already runs its model under autocast.

    Example:
        >>> _autocast_off({"autocast": "bfloat16"})
        'the script already runs the model under bfloat16 autocast'
    """
    dtype = observed.get("autocast")
    return f"the script already runs the model under {dtype} autocast" if dtype else None


def _tf32_off(observed: Observed) -> str | None:
    return "TF32 is already on" if observed.get("tf32") else None


def _benchmark_off(observed: Observed) -> str | None:
    return "cudnn.benchmark is already on" if observed.get("cudnn_benchmark") else None


def _optimizer(kind: str) -> Callable[[Observed], str | None]:
    def applies(observed: Observed) -> str | None:
        found = observed.get("optimizers") or []
        if not found:
            return "no torch.optim optimizer steps"
        if any(o.get(kind) is True for o in found):
            return f"the optimizer already runs with {kind}=True"
        if not any(o.get(f"{kind}_supported") for o in found):
            names = ", ".join(sorted({o["type"] for o in found}))
            return f"{names} has no {kind} implementation on {observed.get('device')}"
        if kind == "foreach" and observed.get("device") == "cuda":
            if not any(o.get("foreach") is False for o in found):
                return "foreach is already the default on CUDA"
        return None

    return applies


#: the DataLoader knob applies when waiting for batches takes at least this share of the step
MIN_DATA_FRACTION = 0.05


def _loader(observed: Observed) -> str | None:
    loaders = observed.get("loaders") or []
    if not loaders:
        return "no torch.utils.data.DataLoader is iterated"
    share = float(observed.get("data_fraction") or 0.0)
    if share < MIN_DATA_FRACTION:
        return f"waiting for batches is {100 * share:.3g}% of the step (< 5%): nothing to win"
    if all(d.get("num_workers", 0) > 0 and d.get("persistent_workers") for d in loaders):
        return "the DataLoader already uses persistent workers"
    return None


#: the baseline's kernel share of its CPU time in the measured steps past which it is tried
MALLOC_KERNEL_SHARE = 0.10


def _kernel_faults(observed: Observed) -> str | None:
    """The malloc knob applies on a CPU run with glibc whose measured steps spent >= 10% of
    the process's CPU time in the kernel with >= 1,000 minor page faults a step (the
    kernel-page-faults advice: fresh mappings of large tensors, zero-filled every step).

    Example:
        >>> kernel = {"sys_ms": 4200.0, "user_ms": 3700.0, "minor_faults": 2_670_000, "steps": 10}
        >>> _kernel_faults({"device": "cpu", "kernel": kernel, "libc": "glibc"}) is None
        True
        >>> _kernel_faults({"device": "cpu", "kernel": {**kernel, "sys_ms": 100.0}, "libc": "glibc"})
        "the measured steps spent 3% of the process's CPU time in the kernel (267,000 page faults a step): nothing for it to win"
    """
    if observed.get("device") == "cuda":
        return "a CPU run's knob: on CUDA the device's work sets the step's pace"
    if (observed.get("libc") or platform.libc_ver()[0]) != "glibc":
        return "needs glibc's malloc (Linux)"
    if any(name in os.environ for name, _ in MALLOC_CACHE_ENV):
        return "MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ are set already"
    kernel = observed.get("kernel") or {}
    cpu = float(kernel.get("sys_ms") or 0.0) + float(kernel.get("user_ms") or 0.0)
    if not kernel.get("steps") or cpu <= 0.0:
        return "the baseline measured no kernel time (no getrusage, or too few steps)"
    share = float(kernel["sys_ms"]) / cpu
    faults = float(kernel.get("minor_faults") or 0.0) / float(kernel["steps"])
    if share < MALLOC_KERNEL_SHARE or faults < 1_000:
        return (f"the measured steps spent {share:.0%} of the process's CPU time in the kernel "
                f"({faults:,.0f} page faults a step): nothing for it to win")  # fmt: skip
    return None


def _anomaly_on(observed: Observed) -> str | None:
    return None if observed.get("anomaly") else "autograd anomaly detection is off"


def _anomaly_off(trial: Any) -> None:
    """Keep anomaly detection off whatever the script asks (``set_detect_anomaly`` and
    ``detect_anomaly`` both switch it through ``torch.set_anomaly_enabled``)."""
    original = torch.set_anomaly_enabled

    def set_anomaly_enabled(enabled: bool, check_nan: bool = True) -> None:
        original(False, check_nan)

    torch.set_anomaly_enabled = set_anomaly_enabled


def _inference(observed: Observed) -> str | None:
    if observed.get("backward"):
        return "backward() runs: inference_mode is for inference loops"
    if observed.get("inference_mode"):
        return "the loop already runs under inference_mode"
    if not observed.get("no_grad"):
        return "the outermost modules are not called under torch.no_grad()"
    return None


# -- turning knobs on -------------------------------------------------------------------------
def _autocast(dtype: torch.dtype) -> Callable[[Any, torch.nn.Module], Any]:
    def around(trial: Any, module: torch.nn.Module) -> Any:
        return torch.autocast(device_type=trial.device_type(module), dtype=dtype)

    return around


def _start_scaler(trial: Any, optimizer: Any) -> None:
    """fp16: a GradScaler scales each loss and steps the optimizer (skipping inf steps)."""
    scaler = trial.state.setdefault("scaler", torch.amp.GradScaler("cuda"))
    original = optimizer.step
    inside = [False]

    def step(*args: Any, **kwargs: Any) -> Any:
        if inside[0]:
            return original(*args, **kwargs)
        inside[0] = True
        try:
            result = scaler.step(optimizer, *args, **kwargs)
            scaler.update()
            return result
        finally:
            inside[0] = False

    optimizer.step = step
    trial.state["scaling"] = True


def _scale_loss(trial: Any, loss: torch.Tensor) -> torch.Tensor:
    return trial.state["scaler"].scale(loss) if trial.state.get("scaling") else loss


def _compiler(mode: str | None) -> Callable[[Any, torch.nn.Module], None]:
    def on_root(trial: Any, module: torch.nn.Module) -> None:
        if next(module.parameters(), None) is not None:
            module.compile(**({"mode": mode} if mode else {}))
            trial.watch_graph_breaks()

    return on_root


def _has_conv(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d) for m in module.modules())


def _channels_last_model(trial: Any, module: torch.nn.Module) -> None:
    if _has_conv(module):
        conv3d = any(isinstance(m, torch.nn.Conv3d) for m in module.modules())
        fmt = torch.channels_last_3d if conv3d else torch.channels_last
        module.to(memory_format=fmt)
        trial.state.setdefault("channels_last", set()).add(id(module))


def _channels_last_inputs(trial: Any, module: torch.nn.Module, args: tuple) -> tuple:
    if id(module) not in trial.state.get("channels_last", ()):
        return args
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    return tuple(
        a.contiguous(memory_format=formats[a.dim()])
        if isinstance(a, torch.Tensor) and a.dim() in formats
        else a
        for a in args
    )


def _flags(**flags: bool) -> Callable[[Any], None]:
    def on_start(trial: Any) -> None:
        for name, value in flags.items():
            owner, attribute = name.rsplit("__", 1)
            target = {"matmul": torch.backends.cuda.matmul, "cudnn": torch.backends.cudnn}[owner]
            setattr(target, attribute, value)

    return on_start


def _optimizer_setting(kind: str) -> Callable[[Any, Any], None]:
    def on_optimizer(trial: Any, optimizer: Any) -> None:
        if kind not in optimizer.defaults:
            return
        for group in optimizer.param_groups:
            group[kind] = True
            group["foreach" if kind == "fused" else "fused"] = False if kind == "fused" else None

    return on_optimizer


def _loader_workers(trial: Any) -> None:
    """Patch DataLoader's constructor: workers, pinned memory (CUDA), persistent workers."""
    import inspect

    from torch.utils.data import DataLoader

    original = DataLoader.__init__
    signature = inspect.signature(original)
    workers = loader_workers()

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        arguments = bound.arguments
        if not arguments.get("num_workers"):
            arguments["num_workers"] = workers
            arguments["persistent_workers"] = True
            if torch.cuda.is_available():
                arguments["pin_memory"] = True
        original(*bound.args, **bound.kwargs)

    DataLoader.__init__ = __init__


def loader_workers() -> int:
    """DataLoader workers the knob tries: up to 4, never more than the machine's cores.

    Example:
        >>> 1 <= loader_workers() <= 4
        True
    """
    return max(1, min(4, os.cpu_count() or 1))


def _inference_mode(trial: Any) -> None:
    # inference_mode() and @inference_mode (bare or called) take what no_grad takes
    torch.no_grad = torch.inference_mode
    torch.autograd.no_grad = torch.inference_mode


def _perturb(trial: Any, module: torch.nn.Module) -> None:
    """Test-only: scale the weights by 1.5 (changes every value the drift check compares)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(1.5)


KNOBS: tuple[Knob, ...] = (
    Knob("bf16_autocast", "bf16 autocast",
         'with torch.autocast("{device}", dtype=torch.bfloat16):\n'
         "    loss = criterion(model(inputs), targets)  # backward and optimizer outside",
         _first(_model, _bf16), group="precision", around_call=_autocast(torch.bfloat16)),
    Knob("fp16_autocast", "fp16 autocast + GradScaler",
         'scaler = torch.amp.GradScaler("cuda")\n'
         'with torch.autocast("cuda", dtype=torch.float16):\n'
         "    loss = criterion(model(inputs), targets)\n"
         "scaler.scale(loss).backward()  # unscale_ before any gradient clipping\n"
         "scaler.step(optimizer)\nscaler.update()",
         _first(_cuda, _model, _autocast_off), group="precision",
         around_call=_autocast(torch.float16),
         on_optimizer=_start_scaler, on_loss=_scale_loss),
    Knob("compile", "torch.compile", "model.compile()  # in place; or model = torch.compile(model)",
         _model, group="compile", on_root=_compiler(None)),
    Knob("compile_reduce_overhead", "torch.compile reduce-overhead (CUDA graphs)",
         'model.compile(mode="reduce-overhead")  # CUDA graphs: static shapes only',
         _first(_cuda, _model), group="compile", on_root=_compiler("reduce-overhead")),
    Knob("compile_max_autotune", "torch.compile max-autotune",
         'model.compile(mode="max-autotune")', _first(_cuda, _model), group="compile",
         on_root=_compiler("max-autotune")),
    Knob("channels_last", "channels_last memory format",
         "model = model.to(memory_format=torch.channels_last)\n"
         "inputs = inputs.to(memory_format=torch.channels_last)  # each batch",
         _first(_model, _conv), on_root=_channels_last_model, on_inputs=_channels_last_inputs),
    Knob("tf32", "TF32 matmul and cuDNN",
         "torch.backends.cuda.matmul.allow_tf32 = True\ntorch.backends.cudnn.allow_tf32 = True",
         _first(_cuda, _tf32_off),
         on_start=_flags(matmul__allow_tf32=True, cudnn__allow_tf32=True)),
    Knob("cudnn_benchmark", "cudnn.benchmark", "torch.backends.cudnn.benchmark = True",
         _first(_cuda, _conv, _benchmark_off), on_start=_flags(cudnn__benchmark=True)),
    Knob("fused_optimizer", "fused optimizer",
         "optimizer = torch.optim.{optimizer}(model.parameters(), ..., fused=True)",
         _optimizer("fused"), group="optimizer", on_optimizer=_optimizer_setting("fused")),
    Knob("foreach_optimizer", "foreach optimizer",
         "optimizer = torch.optim.{optimizer}(model.parameters(), ..., foreach=True)",
         _optimizer("foreach"), group="optimizer", on_optimizer=_optimizer_setting("foreach")),
    Knob("dataloader_workers", "DataLoader workers",
         "loader = DataLoader(dataset, ..., num_workers={workers}, pin_memory=True,\n"
         "                    persistent_workers=True)",
         _loader, on_start=_loader_workers),
    Knob("inference_mode", "inference_mode instead of no_grad",
         "with torch.inference_mode():  # instead of torch.no_grad()\n    output = model(inputs)",
         _inference, on_start=_inference_mode),
    Knob("anomaly_detection_off", "autograd anomaly detection off",
         "torch.autograd.set_detect_anomaly(args.debug)  # on only while hunting a NaN",
         _anomaly_on, on_start=_anomaly_off),
    Knob("malloc_cache", "glibc malloc keeps large blocks mapped (no mmap, no trim)",
         "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python train.py  # in the "
         "shell: glibc reads them at start\n# or a caching allocator: "
         "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python train.py",
         _kernel_faults, env=MALLOC_CACHE_ENV),
    Knob("perturb_weights", "test only: weights x1.5", "", _model, hidden=True,
         on_root=_perturb),
)  # fmt: skip

KNOB_BY_NAME: dict[str, Knob] = {knob.name: knob for knob in KNOBS}


def knob_names(*, hidden: bool = False) -> list[str]:
    """Names of the knobs offered to users (``hidden=True``: test-only ones too).

    Example:
        >>> "perturb_weights" in knob_names(), "compile" in knob_names()
        (False, True)
    """
    return [k.name for k in KNOBS if hidden or not k.hidden]


def snippet(knob: Knob, observed: Observed) -> str:
    """The knob's snippet with the run's device, optimizer and worker count filled in.

    Example:
        >>> snippet(KNOB_BY_NAME["bf16_autocast"], {"device": "cpu"}).splitlines()[0]
        'with torch.autocast("cpu", dtype=torch.bfloat16):'
    """
    optimizers = observed.get("optimizers") or [{}]
    return knob.snippet.format(
        device=observed.get("device") or "cuda",
        optimizer=optimizers[0].get("type", "AdamW"),
        workers=loader_workers(),
    )
