"""One trial: the unmodified script with some knobs on, stopped after its measured steps.

Run as ``python -m torchdoctor.tuning.harness SPEC.json`` (a fresh process per trial, started by
``tuning/trial.py``). The script runs through ``torchdoctor run``'s machinery
(:func:`~torchdoctor.collect.script.run_script`) under a fixed seed; :class:`Trial` hooks:

- global module hooks find the outermost modules (the first call of each at depth 0); each
  gets a subclass whose ``__call__`` marks steps, records outputs and applies the knobs'
  ``around_call``/``on_inputs`` outside any compiled region (``module.compile()`` compiles
  ``_call_impl`` underneath). The global hooks are removed once warm-up ends;
- global optimizer hooks (first step: ``on_optimizer``; every step: boundaries);
- ``torch.autograd.backward`` (the loss value, ``on_loss``, boundaries);
- DataLoader ``__next__`` (time waiting for batches).

After warm-up + N steps :class:`~torchdoctor.tuning.steps.StepWatch` raises ``StopScript`` at a
step boundary; the results are written as JSON (step times, recorded values, peak memory, what
was observed, graph breaks) and the process ends.

Example:
    >>> trial = Trial({"knobs": [], "warmup": 1, "steps": 2})
    >>> trial.install()
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> for _ in range(2):
    ...     _ = net(torch.ones(1, 2))
    >>> trial.remove()
    >>> trial.observed()["roots"][0]["type"]
    'Linear'
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import resource
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch.nn.modules import module as _module

from torchdoctor.collect.engine_state import autocast_dtype, loader_settings, optimizer_settings
from torchdoctor.collect.install import Installation
from torchdoctor.tuning.adopt import adopt
from torchdoctor.tuning.knobs import KNOB_BY_NAME
from torchdoctor.tuning.steps import StepWatch

_BREAK = re.compile(r"Graph break in user code at (?P<where>.+?):(?P<line>\d+)")


def first_tensor(value: Any, depth: int = 0) -> torch.Tensor | None:
    """The first tensor in a module's output (tensor, tuple, list, dict, ModelOutput).

    Example:
        >>> first_tensor((1, {"a": torch.ones(2)})).shape
        torch.Size([2])
    """
    if isinstance(value, torch.Tensor):
        return value
    if depth > 3:
        return None
    items = value.values() if isinstance(value, Mapping) else value
    if isinstance(items, list | tuple) or isinstance(value, Mapping):
        for item in items:
            found = first_tensor(item, depth + 1)
            if found is not None:
                return found
    return None


_LIVE: list[Trial] = []  # the trials installed in this process (one at a time)


def _after_fork_in_child() -> None:
    """A loader's worker forked in warm-up inherits the hooks: it runs no step (see _pre)."""
    for trial in _LIVE:
        with contextlib.suppress(Exception):  # (never keep a child from its work)
            trial._remove_module_hooks()
            trial.fetching += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Trial:
    """Hooks of one trial; ``install()`` before the script, ``remove()`` after (undoes all).

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> trial = Trial({"knobs": [], "warmup": 1, "steps": 2})
        >>> trial.install()
        >>> for _ in range(3):
        ...     net(torch.ones(1, 2)).sum().backward()
        ...     opt.step()
        >>> trial.remove()
        >>> trial.watch.mode, trial.observed()["optimizers"][0]["type"]
        ('optimizer', 'SGD')
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        self.knobs = [KNOB_BY_NAME[name] for name in spec.get("knobs", [])]
        self.state: dict[str, Any] = {}
        self.watch = StepWatch(
            int(spec.get("warmup", 2)), int(spec.get("steps", 10)), spec.get("max_seconds"),
            on_measure=self._measuring, expect=spec.get("boundary"), grace_s=spec.get("grace_s"),
        )  # fmt: skip
        self.roots: dict[int, dict[str, Any]] = {}
        self._root_modules: list[tuple[torch.nn.Module, type]] = []
        self.optimizers: dict[int, dict[str, Any]] = {}
        self.loaders: dict[int, dict[str, Any]] = {}
        self.graph_breaks: dict[tuple[str, int, str], int] = {}
        self.depth = 0
        self.root_depth = 0
        self.fetching = 0  # inside a DataLoader's next(): modules called are its transforms
        self.backward_count = 0
        self._hooks = Installation()
        self._module_handles: list[Any] = []
        self._log_handler: logging.Handler | None = None
        self._saved = {
            "no_grad": (torch.no_grad, torch.autograd.no_grad),
            "flags": (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                      torch.backends.cudnn.benchmark),
        }  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------------------
    def install(self) -> None:
        from torch.utils.data import DataLoader

        self._saved["loader_init"] = DataLoader.__init__
        self._module_handles = [
            _module.register_module_forward_pre_hook(self._pre),
            _module.register_module_forward_hook(self._post, always_call=True),
        ]
        _LIVE.append(self)
        hooks = self._hooks
        hooks.add_optimizer_hooks(self._optimizer_pre, self._optimizer_post)
        hooks.wrap_data_loader(self._data_enter, self._data_leave)
        original = torch.autograd.backward

        def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
            return self._backward(original, tensors, args, kwargs)

        torch.autograd.backward = backward
        hooks.add_undo(lambda: setattr(torch.autograd, "backward", original))
        for knob in self.knobs:
            if knob.on_start is not None:
                knob.on_start(self)

    def remove(self) -> None:
        from torch.utils.data import DataLoader

        if self in _LIVE:
            _LIVE.remove(self)
        self._remove_module_hooks()
        self._hooks.remove()
        for module, cls in self._root_modules:
            module.__class__ = cls
        torch.no_grad, torch.autograd.no_grad = self._saved["no_grad"]
        flags = self._saved["flags"]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags[:2]
        torch.backends.cudnn.benchmark = flags[2]
        DataLoader.__init__ = self._saved["loader_init"]
        if self._log_handler is not None:
            logging.getLogger("torch._dynamo").removeHandler(self._log_handler)

    def _remove_module_hooks(self) -> None:
        for handle in self._module_handles:
            handle.remove()
        self._module_handles = []

    def _measuring(self) -> None:
        """Warm-up is over: the global module hooks go (no per-module cost while measuring)."""
        self._remove_module_hooks()
        self.depth = 0

    # -- helpers for knobs --------------------------------------------------------------------
    def device_type(self, module: torch.nn.Module) -> str:
        """``cpu`` or ``cuda``...: where the module's parameters live."""
        for tensor in module.parameters():
            return tensor.device.type
        return "cuda" if torch.cuda.is_available() and torch.cuda.is_initialized() else "cpu"

    def watch_graph_breaks(self) -> None:
        """Collect torch.compile's graph breaks (reason, source line) from its log records."""
        if self._log_handler is not None:
            return
        trial = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                trial._graph_break(record.getMessage())

        self._log_handler = Handler(logging.DEBUG)
        torch._logging.set_logs(graph_breaks=True)
        logging.getLogger("torch._dynamo").addHandler(self._log_handler)

    def _graph_break(self, message: str) -> None:
        found = _BREAK.search(message)
        if not found:
            return
        reason = ""
        _, _, after = message.partition("Graph Break Reason:")
        for line in after.splitlines():
            text = line.strip()
            if text and not text.startswith("Encountered graph break"):
                reason = text
                break
        key = (found["where"].strip(), int(found["line"]), reason[:300])
        self.graph_breaks[key] = self.graph_breaks.get(key, 0) + 1

    # -- module hooks -------------------------------------------------------------------------
    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        if torch.compiler.is_compiling():
            return
        if not (self.depth or self.root_depth or self.fetching or hasattr(module, "_td_base_call")):
            self._first_root_call(module)  # (not a loader's transforms, run in its fetch)
        self.depth += 1

    def _post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if not torch.compiler.is_compiling():
            self.depth = max(0, self.depth - 1)

    def _first_root_call(self, module: torch.nn.Module) -> None:
        if id(module) in self.roots:
            return
        modules = list(module.modules())
        self.roots[id(module)] = {
            "type": type(module).__name__,
            "params": _count_parameters(module),
            "conv": any(isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d) for m in modules),
            "device": self.device_type(module),
            "no_grad": not torch.is_grad_enabled() and not torch.is_inference_mode_enabled(),
            "inference_mode": torch.is_inference_mode_enabled(),
            # the script's own autocast around the call: its dtype (None: off)
            "autocast": autocast_dtype(self.device_type(module)),
            "anomaly": torch.is_anomaly_enabled(),  # autograd anomaly detection on
        }
        self._adopt(module)
        for knob in self.knobs:
            if knob.on_root is not None:
                knob.on_root(self, module)
        self.watch.root_call(module)

    def _adopt(self, module: torch.nn.Module) -> None:
        """Give the module a subclass whose ``__call__`` runs :meth:`call_root`
        (``tuning/adopt.py``); without it (an unusual class) the knobs' call hooks are off."""
        cls = type(module)
        if adopt(module, self.call_root):
            self._root_modules.append((module, cls))

    def call_root(self, module: Any, call: Any, args: tuple, kwargs: dict) -> Any:
        """An outermost call of an adopted module: step marks, the knobs, the output value."""
        if self.root_depth or self.depth:
            return call(module, *args, **kwargs)
        self.watch.root_call(module)
        for knob in self.knobs:
            if knob.on_inputs is not None:
                args = knob.on_inputs(self, module, args)
        with contextlib.ExitStack() as stack:
            for knob in self.knobs:
                if knob.around_call is not None:
                    stack.enter_context(knob.around_call(self, module))
            self.root_depth += 1
            try:
                output = call(module, *args, **kwargs)
            finally:
                self.root_depth -= 1
        watch = self.watch
        if not self.backward_count and not watch.optimizer_seen and module is watch.anchor:
            tensor = first_tensor(output)
            if tensor is not None:
                watch.record(tensor.detach().float().abs().mean())
        return output

    # -- optimizer, backward, data ------------------------------------------------------------
    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if id(optimizer) in self.optimizers:
            return
        self.optimizers[id(optimizer)] = optimizer_settings(optimizer)
        for knob in self.knobs:
            if knob.on_optimizer is not None:
                knob.on_optimizer(self, optimizer)

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.watch.optimizer_step(optimizer)

    def _backward(self, original: Any, tensors: Any, args: tuple, kwargs: dict) -> Any:
        root = tensors if isinstance(tensors, torch.Tensor) else None
        if root is None and isinstance(tensors, list | tuple) and tensors:
            root = tensors[0] if isinstance(tensors[0], torch.Tensor) else None
        if root is not None:
            self.watch.record(root if root.numel() == 1 else root.detach().sum())
            for knob in self.knobs:
                if knob.on_loss is not None and isinstance(tensors, torch.Tensor):
                    tensors = knob.on_loss(self, tensors)
        self.backward_count += 1
        result = original(tensors, *args, **kwargs)
        self.watch.backward_done()
        return result

    def _data_enter(self, iterator: Any) -> int:
        if iterator is not None and id(iterator) not in self.loaders:  # (None: iter() of one)
            self.loaders[id(iterator)] = loader_settings(iterator)
        self.fetching += 1
        return time.perf_counter_ns()

    def _data_leave(self, started: int) -> None:
        self.fetching -= 1
        self.watch.data_total += time.perf_counter_ns() - started

    # -- results ------------------------------------------------------------------------------
    def observed(self) -> dict[str, Any]:
        """What this run saw: the facts knobs decide their applicability from."""
        roots = list(self.roots.values())
        devices = [r["device"] for r in roots if r["params"]]
        cuda = torch.cuda.is_available()
        device = devices[0] if devices else ("cuda" if cuda and torch.cuda.is_initialized()
                                             else "cpu")  # fmt: skip
        watch = self.watch
        measured = watch.step_ms()[watch.warmup :]
        data = watch.data_ms()[watch.warmup :]
        return {
            "device": device, "cuda_available": cuda,
            "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "backward": self.backward_count > 0, "boundary": watch.mode, "roots": roots,
            "no_grad": any(r["no_grad"] for r in roots),
            "inference_mode": any(r["inference_mode"] for r in roots),
            "autocast": next((r["autocast"] for r in roots if r.get("autocast")), None),
            "anomaly": any(r.get("anomaly") for r in roots),
            "optimizers": list(self.optimizers.values()),
            "loaders": list(self.loaders.values()),
            "data_fraction": sum(data) / sum(measured) if sum(measured) > 0 else 0.0,
        }  # fmt: skip

    def breaks(self) -> list[dict[str, Any]]:
        """Graph breaks seen, with their source line, reason and count."""
        return [{"file": f, "line": line, "reason": r, "count": n}
                for (f, line, r), n in sorted(self.graph_breaks.items())]  # fmt: skip


def _count_parameters(module: torch.nn.Module) -> int:
    """Parameters of the module (a lazy one not yet materialized counts as 1)."""
    lazy = torch.nn.parameter.UninitializedParameter
    return sum(1 if isinstance(p, lazy) else p.numel() for p in module.parameters())


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy

        numpy.random.seed(seed)


def _rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def run_trial_here(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run the script of ``spec`` in this process with its knobs; the trial's results.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "train.py")
        >>> _ = open(path, "w").write("import torch\\nnet = torch.nn.Linear(2, 1)\\n"
        ...     "for _ in range(100):\\n    net(torch.ones(1, 2)).sum().backward()\\n")
        >>> result = run_trial_here({"script": path, "knobs": [], "warmup": 1, "steps": 2})
        >>> result["mode"], result["stopped"], result["error"], len(result["values"])
        ('backward', True, None, 3)
    """
    from torchdoctor.collect.script import run_script
    from torchdoctor.collect.script_module import load_target

    script = load_target(spec["script"])
    _seed(int(spec.get("seed", 0)))
    rss_before = _rss_bytes()
    trial = Trial(spec)
    started = time.perf_counter_ns()
    trial.install()
    try:
        outcome = run_script(script, spec.get("args", []))
    finally:
        trial.remove()
    watch = trial.watch
    first = watch.marks[0][0] if watch.marks else time.perf_counter_ns()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    error = None
    if not outcome.stopped and outcome.exit_code != 0:
        error = (outcome.traceback_text or f"exit code {outcome.exit_code}").strip()[-2000:]
    return {
        "knobs": list(spec.get("knobs", [])), "stopped": outcome.stopped,
        "exit_code": outcome.exit_code, "error": error, "mode": watch.mode,
        "warmup": watch.warmup, "step_ms": watch.step_ms(), "data_ms": watch.data_ms(),
        "values": watch.recorded_values(), "startup_s": (first - started) / 1e9,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda
        else max(0, _rss_bytes() - rss_before),
        "memory_kind": "cuda" if cuda else "rss", "observed": trial.observed(),
        "graph_breaks": trial.breaks(), "kernel": watch.kernel(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m torchdoctor.tuning.harness SPEC.json``: run one trial, write its JSON.

    Example:
        >>> import tempfile
        >>> from unittest import mock
        >>> folder = tempfile.mkdtemp()
        >>> script, spec = os.path.join(folder, "train.py"), os.path.join(folder, "spec.json")
        >>> _ = open(script, "w").write("import torch\\nx = torch.ones(2, requires_grad=True)\\n"
        ...     "while True:\\n    (x * 2).sum().backward()\\n")
        >>> _ = open(spec, "w").write(json.dumps({"script": script, "warmup": 1, "steps": 2,
        ...                                       "result": spec + ".out"}))
        >>> with mock.patch("os._exit") as exit_:  # main ends the trial's process: not this one
        ...     main([spec])
        >>> exit_.call_args.args, json.load(open(spec + ".out"))["mode"]
        ((0,), 'backward')
    """
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    try:
        result = run_trial_here(spec)
    except Exception as exc:  # torchdoctor's own failure: say so in the result
        result = {"knobs": spec.get("knobs", []), "error": f"{type(exc).__name__}: {exc}"}
    temporary = spec["result"] + ".part"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    os.replace(temporary, spec["result"])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # threads or workers the script left running must not keep the trial alive


if __name__ == "__main__":  # pragma: no cover
    from torchdoctor.tuning.harness import main as _main  # (under its own name: Dynamo, tracing

    _main()  # this file's hooks, looked `torch` up on `__main__`, which the trial's script is)
