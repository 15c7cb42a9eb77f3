"""Where a host read or a data-dependent shape runs on every training step one call away from
the loop: a module-level function a training loop of the project calls (RAFT's
``sequence_loss``, whose metrics dict reads ``epe.mean().item()``), or a method that a
framework's step method or a training loop of its class calls through ``self``. A mixin of
the sync rules (TD201) and the dynamic-shape rules (TD207).
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.call_index import calls_named
from torchdoctor.lint.forward_calls import _run_by_forward
from torchdoctor.lint.loop_shapes import feeds_an_environment
from torchdoctor.lint.project_scan import _under_no_grad
from torchdoctor.lint.tensor_values import TORCH_ONLY_METHODS
from torchdoctor.lint.tensors import framework_step_method
from torchdoctor.lint.visitor import FUNCTIONS, HOST_COPY_METHODS, dotted, method_name

#: functions named for evaluation: run by a training loop every step, their reads are the
#: evaluation's (TD712 tells when its result is read only every N steps)
_EVALUATION = re.compile(r"evaluat|validat|(^|_)val(id)?(_|$)|visuali|post_?process", re.I)
_POSTPROCESSING = re.compile(r"post_?process|evaluat|metric|visuali", re.IGNORECASE)
#: methods a forward runs only to produce outputs for people (detectron2's ``Detr.inference``,
#: BLIP's ``rank_answer``): not every training call
_INFERENCE_METHOD = re.compile(r"infer|generat|rank|predict|decod|sampl|search", re.IGNORECASE)


class StepHelpers:
    """:meth:`_helper_of_a_step` and :meth:`report_in_step_helper` for a rule visitor.

    Example:
        >>> from pathlib import Path
        >>> from tempfile import TemporaryDirectory
        >>> from torchdoctor.lint import lint_paths
        >>> with TemporaryDirectory() as d:
        ...     _ = (Path(d) / "losses.py").write_text(
        ...         "import torch\\ndef seq_loss(pred, gt):\\n    err = torch.abs(pred - gt)\\n"
        ...         "    return err.mean(), {'err': err.max().item()}\\n")
        ...     _ = (Path(d) / "train.py").write_text(
        ...         "from losses import seq_loss\\nfor x, y in loader:\\n"
        ...         "    loss, m = seq_loss(model(x.cuda()), y.cuda())\\n    loss.backward()\\n")
        ...     [(Path(f.path).name, f.line, f.code) for f in lint_paths([d], select=["TD201"])]
        [('losses.py', 4, 'TD201')]
    """

    def _helper_of_a_step(self, node: ast.AST) -> str | None:
        """``in `losses` (called at f.py:9, every training step)``: a module-level function a
        training loop of the project calls every step (TD207's a detector's loss); or None."""
        scope = self.enclosing_scope(node)
        project = self.context.project
        owner = self.parent(scope)
        if isinstance(scope, FUNCTIONS) and isinstance(owner, ast.ClassDef):
            return self._method_of_a_step(node, scope, owner)
        if (project is None or not isinstance(scope, FUNCTIONS)
                or not isinstance(owner, ast.Module)
                or _under_no_grad(node) is True or self.under_log_gate(node, scope)
                or self.skip_sync(node, scope)):  # fmt: skip
            return None
        hit = project.called_in_loop(scope.name, training=True, path=self.context.path)
        if hit is not None:
            return f"in `{scope.name}` (called at {hit[0]}:{hit[1]}, every training step)"
        for call in calls_named(self, scope.name):  # (one caller up, through the call index:
            caller = self.enclosing_scope(call)  # SiamRPN's rpn_losses runs select_cls_loss)
            if (isinstance(call.func, ast.Name) and isinstance(caller, FUNCTIONS)
                    and caller is not scope and _under_no_grad(call) is not True
                    and not self.under_log_gate(call, caller)):  # fmt: skip
                cls = self.parent(caller)  # (or a method a step loop calls on an instance:
                hit = project.called_in_loop(caller.name, True, self.context.path) if isinstance(  # TGN's
                    cls, ast.Module) else project.method_called_in_loop(cls.name, caller.name) if (
                    isinstance(cls, ast.ClassDef)) else None  # model.update_memory runs last_message)
                if hit is not None:
                    name = caller.name if isinstance(cls, ast.Module) else f"{cls.name}.{caller.name}"
                    return (f"in `{scope.name}` (called by `{name}`, called at "
                            f"{hit[0]}:{hit[1]}, every training step)")
        return None

    def _method_of_a_step(self, node: ast.AST, scope: ast.AST, owner: ast.ClassDef) -> str | None:
        """``in `MLMTrainer.sampled_loss` (called by `MLMTrainer.compute_loss`, every training
        step)``: a method that a method the framework runs every step (Lightning's
        ``training_step``, a ``Trainer`` subclass's ``compute_loss``) calls through ``self``."""
        if (_under_no_grad(node) is True or _POSTPROCESSING.search(scope.name)
                or (_INFERENCE_METHOD.search(scope.name) and "loss" not in scope.name)
                or self.under_log_gate(node, scope) or self.skip_sync(node, scope)):  # fmt: skip
            return None  # (a sampled-softmax loss is one)
        for step in owner.body:
            if isinstance(step, FUNCTIONS) and framework_step_method(owner, step) and (
                scope in _run_by_forward(owner, step)[1:]
            ):
                return (f"in `{owner.name}.{scope.name}` (called by `{owner.name}.{step.name}`, "
                        "every training step)")
        for call in ast.walk(owner):  # self.loss_of(features) in a training loop of a method
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == scope.name and dotted(call.func.value) == "self"
                    and self.enclosing_scope(call) is not scope):  # fmt: skip
                loop = self._training_context(call)
                if isinstance(loop, (ast.For, ast.While)) and not self.under_log_gate(call, loop):
                    method = self.enclosing_scope(call).name  # type: ignore[attr-defined]
                    return (f"in `{owner.name}.{scope.name}` (called by `{owner.name}.{method}` "
                            f"at line {call.lineno}, every training step)")
        project = self.context.project  # (the class's instance used in a step loop, or by a
        for entry in owner.body if project is not None else ():  # framework's step method)
            site = project.method_called_in_loop(owner.name, entry.name) if isinstance(
                entry, FUNCTIONS) and scope in _run_by_forward(owner, entry) else None  # fmt: skip
            if site is not None:  # (3DGS's gaussians.add_densification_stats(...) each step)
                via = "" if entry is scope else f"called by `{owner.name}.{entry.name}`, "
                return (f"in `{owner.name}.{scope.name}` ({via}called at {site[0]}:{site[1]}, "
                        "every training step)")
        return None

    def _reads_what_it_is_given(self, node: ast.AST, function: ast.AST) -> bool:
        """``node`` reads a value ``function`` computes from its parameters (``epe.mean()``
        with ``epe`` from ``flow_preds``), the function computes with torch (a ``torch.*``
        call or a method only tensors have: ``clock.now().item()`` alone is no evidence), and
        saves nothing (a checkpoint helper's ``.cpu()`` copies are what ``torch.save`` writes:
        TD711's)."""
        args = function.args  # type: ignore[attr-defined]
        given = _derived({a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}, function)
        if not any(isinstance(n, ast.Name) and n.id in given for n in ast.walk(node)):
            return False
        if any(isinstance(c, ast.Call) and (dotted(c.func) or "").endswith("save")
               for c in ast.walk(function)):  # fmt: skip
            return False  # (a checkpoint helper: its copies are the save's)
        return any(isinstance(c, ast.Call) and (method_name(c) in TORCH_ONLY_METHODS and not (
            self.callee(c)) or any(  # (math.log(v) is no tensor's method)
            n.startswith("torch.") for n in self.callee(c))) for c in ast.walk(function))  # fmt: skip

    def _returns_an_action(self, node: ast.AST, function: ast.AST) -> bool:
        """``node`` is what ``function`` returns, and every call of it in the file is an action
        its loop hands to an environment (a DQN's ``act(net, obs, eps)`` ending in
        ``return q.argmax(1).item()``, then ``env.step(a)``): the environment needs it on the
        host (``feeds_an_environment``), as it does an action read in the loop itself."""
        stmt = self.parent(node)
        while stmt is not None and not isinstance(stmt, ast.stmt):
            stmt = self.parent(stmt)
        calls = [c for c in calls_named(self, function.name) if isinstance(c.func, ast.Name)]  # type: ignore[attr-defined]
        loops = [next(iter(self.enclosing_loops(c)), None) for c in calls]
        return isinstance(stmt, ast.Return) and bool(calls) and all(
            loop is not None and feeds_an_environment(c, loop) for c, loop in zip(calls, loops))

    def report_in_step_helper(self, node: ast.AST, what: str) -> bool:
        """TD201 for a host read in a module-level function that a training loop of the
        project calls on every step (not under a logging gate: :func:`gated_calls`), unless
        the read itself is gated in the function or ends the run; True when reported."""
        scope, project = self.enclosing_scope(node), self.context.project
        if (project is None or not isinstance(scope, FUNCTIONS)
                or not isinstance(self.parent(scope), ast.Module) or _EVALUATION.search(scope.name)
                or self.under_log_gate(node, scope) or self.skip_sync(node, scope)
                or not self._reads_what_it_is_given(node, scope)
                or self._returns_an_action(node, scope)):  # fmt: skip
            return False
        hit = project.called_in_loop(scope.name, "every step", self.context.path)
        reported = self.__dict__.setdefault("_reads_one_deep", set())
        if hit is None or node in reported:
            return hit is not None
        reported.add(node)  # (the same read found from the loop's call: told once)
        cuda = self.context.uses_cuda or project.uses_cuda
        self.report(
            node,
            "TD201",
            f"{what} in `{scope.name}` (called at {hit[0]}:{hit[1]}, every training step) "
            + ("forces a host-device sync every step" if cuda else "reads a tensor on the host "
               "every step, a host-device sync on a GPU run (this code moves nothing to CUDA)")
            + ": return device tensors (detach them) and convert them at log time "
            "(torchdoctor.train.LazyMetrics)",
        )
        return True


def _derived(tensors: set[str], function: ast.AST) -> set[str]:
    """``tensors`` and the names ``function`` assigns from them, transitively (``_, pred =
    output.topk(5, 1)``; ``correct = pred.eq(target)``; ``for k, v in loss_dict.items()``),
    except values read to the host.

    Example:
        >>> src = "def acc(out, y):\\n    _, p = out.topk(5, 1)\\n    c = p.eq(y)\\n    v = c.sum().item()\\n"
        >>> sorted(_derived({"out", "y"}, ast.parse(src).body[0]))
        ['_', 'c', 'out', 'p', 'y']
    """
    derived = set(tensors)
    binds = [(n.value, n.targets) for n in ast.walk(function) if isinstance(n, ast.Assign)]
    binds += [(n.iter, [n.target]) for n in ast.walk(function)  # (for k, v in d.items())
              if isinstance(n, (ast.comprehension, ast.For))]  # fmt: skip
    binds.sort(key=lambda b: (getattr(b[0], "lineno", 0), getattr(b[0], "col_offset", 0)))
    for value, targets in binds:
        reads = {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}
        host = any(isinstance(c, ast.Call) and method_name(c) in HOST_COPY_METHODS
                   for c in ast.walk(value))  # fmt: skip
        if reads & derived and not host:
            derived |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return derived
