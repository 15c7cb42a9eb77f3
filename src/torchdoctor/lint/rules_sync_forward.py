"""TD205 host reads inside ``forward``; TD201 one call deep (a method called every step that
reads tensors on the host). A mixin of :class:`torchdoctor.lint.rules_sync.SyncRules`."""

from __future__ import annotations

import ast

from torchdoctor.lint.forward_calls import _run_by_forward, methods_of_built_objects
from torchdoctor.lint.rules_precision import is_model_like
from torchdoctor.lint.step_helpers import _INFERENCE_METHOD, _POSTPROCESSING, StepHelpers, _derived
from torchdoctor.lint.syntax import and_others, every_step_of, parent, root_name, same_file_callee
from torchdoctor.lint.tensors import NOT_TENSORS, REDUCTIONS, TORCH_TENSOR_FUNCTION, TRUTH_METHODS
from torchdoctor.lint.visitor import FOR, FUNCTIONS, HOST_COPY_METHODS, dotted, method_name

_LOOP_STATEMENTS = (*FOR, ast.While)
#: torch functions that return a tensor of one number (compared in Python: a host read)
_TORCH_SCALARS = frozenset({"torch.det", "torch.linalg.det", "torch.logdet", "torch.trace",
                            "torch.dot", "torch.vdot", "torch.linalg.norm", "torch.norm"})  # fmt: skip


class ForwardAndCallSyncs(StepHelpers):
    """Checks SyncRules runs for syncs in ``forward`` and one call away.

    Example:
        >>> hasattr(ForwardAndCallSyncs, "_check_call_one_deep")
        True
    """

    def _report_in_forward(self, node: ast.AST, what: str) -> None:
        """TD205: a host read inside ``Module.forward`` (a criterion's too) runs on every
        call, stalls the CPU and breaks the torch.compile graph."""
        owner = self.forward_owner(node)
        where = f"`{owner}.forward`" if owner is not None else self._helper_of_a_forward(node)
        if where is None:  # (or TD201: a function a training loop calls every step)
            self.report_in_step_helper(node, what)
            return
        packs = self._feeds_packing(node)
        if what in {"`.cpu()`", "`.numpy()`"} and not packs and self._exports_to_host_library(
            self.enclosing_scope(node)
        ):
            return  # deliberate: the data feeds NumPy/SciPy (reported by TD303 where it fits)
        fix = (
            "pack_padded_sequence wants the lengths on the CPU: pass the loader's CPU lengths "
            "(keep them off the device when moving the batch), so nothing is read back"
            if packs else
            "check it once where the data is made, or on a sample of calls (`python -O` "
            "strips asserts), or on the device without waiting: torch._assert_async(cond)"
            if isinstance(self.parent(node), ast.Assert)
            else "keep the value a tensor (`torch.clamp(n, min=1)` rather than "
            "`max(n.item(), 1)`), or move the read out of forward"
        )
        self.report(
            node,
            "TD205",
            f"{what} in {where} synchronizes with the GPU on every call and breaks "
            f"the torch.compile graph: {fix}",
        )

    def _feeds_packing(self, node: ast.AST) -> bool:
        """The host copy becomes the lengths of ``pack_padded_sequence`` (Tacotron 2's
        ``input_lengths = input_lengths.cpu().numpy()``), directly or through a name."""
        scope, statement = self.enclosing_scope(node), self.parent(node)
        while statement is not None and not isinstance(statement, ast.stmt):
            statement = self.parent(statement)
        names = {n.id for t in getattr(statement, "targets", ()) for n in ast.walk(t)
                 if isinstance(n, ast.Name)}  # fmt: skip
        for call in ast.walk(scope):
            if isinstance(call, ast.Call) and (dotted(call.func) or "").endswith("pack_padded_sequence"):
                args = [*call.args, *(k.value for k in call.keywords)]
                if any(node in ast.walk(a) or (isinstance(a, ast.Name) and a.id in names)
                       for a in args):  # fmt: skip
                    return True
        return False

    def _helper_of_a_forward(self, node: ast.AST) -> str | None:
        """A module-level function some module's ``forward`` in the project calls, which runs
        ``node`` on every call (DETR's ``generalized_box_iou``, whose asserts read box tensors,
        in ``HungarianMatcher.forward``): "`fn` (called by `Cls.forward`, file:line)"."""
        scope = self.enclosing_scope(node)
        project = self.context.project
        owner = self.parent(scope)
        if (isinstance(scope, FUNCTIONS) and isinstance(owner, ast.ClassDef)
                and scope.name != "forward" and not _POSTPROCESSING.search(owner.name)
                and not _POSTPROCESSING.search(scope.name) and not _INFERENCE_METHOD.search(scope.name)
                and not self.under_log_gate(node, scope) and not self.skip_sync(node, scope)):
            forward = next((f for f in owner.body if isinstance(f, FUNCTIONS)
                            and f.name == "forward"), None)  # fmt: skip
            if forward is not None and scope in _run_by_forward(owner, forward)[1:]:
                return f"`{owner.name}.{scope.name}` (called by `{owner.name}.forward`)"
            built = self.context.cache.setdefault(("built objects",), methods_of_built_objects(
                self.context.tree)) if self.context.tree is not None else {}  # fmt: skip
            if id(scope) in built:  # (a dispatcher object the forward builds and runs)
                return f"`{owner.name}.{scope.name}` (run by `{built[id(scope)]}` on an object it builds)"
        if (
            project is None
            or not isinstance(scope, FUNCTIONS)
            or not isinstance(owner, ast.Module)
            or _POSTPROCESSING.search(scope.name)  # (turns outputs into Python by design)
            or self.under_log_gate(node, scope)
            or self.skip_sync(node, scope)
        ):
            return None
        hit = project.called_in_forward(scope.name, self.context.path)
        if hit is None or _POSTPROCESSING.search(hit[2]):
            return None
        return f"`{scope.name}` (called by `{hit[2]}`{and_others(hit[3])}, {hit[0]}:{hit[1]})"

    def forward_owner(self, node: ast.AST) -> str | None:
        """The class whose ``forward`` runs ``node`` on every call; None outside forward, in
        an inference-only forward (``@torch.no_grad()``), a post-processing / evaluation /
        metric class, or a logged or run-ending branch."""
        scope = self.enclosing_scope(node)
        if not (
            isinstance(scope, FUNCTIONS)
            and scope.name == "forward"
            and isinstance(self.parent(scope), ast.ClassDef)
        ):
            return None
        if self.under_log_gate(node, scope) or self.skip_sync(node, scope):
            return None
        if any(
            (dotted(d.func if isinstance(d, ast.Call) else d) or "").endswith(
                ("no_grad", "inference_mode")
            )
            for d in scope.decorator_list
        ):
            return None  # an inference-only module (post-processing turns outputs into Python)
        owner = self.parent(scope).name
        if _POSTPROCESSING.search(owner):
            return None  # turns outputs into Python values by design (evaluation)
        return owner

    def _exports_to_host_library(self, scope: ast.AST) -> bool:
        for call in ast.walk(scope):
            if isinstance(call, ast.Call):
                if method_name(call) == "numpy" or any(
                    n.startswith(("numpy.", "scipy.", "sklearn.")) for n in self.callee(call)
                ):
                    return True
        return False

    def _check_function_one_deep(self, node: ast.Call) -> None:
        """``log_metrics(loss, acc, logger)`` in a training loop, where the file's function
        ``log_metrics`` reads a parameter on the host (``loss.item()``): the sync is one call
        deep, every step."""
        function = same_file_callee(node) or _module_lambda(node)
        if function is None or any(isinstance(a, ast.Starred) for a in node.args):
            return
        params = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
        if not isinstance(node.func, ast.Name):
            params = params[1:]  # (self)
        passed = dict(zip(params, node.args))
        passed.update((k.arg, k.value) for k in node.keywords if k.arg in params)
        tensors = _derived({name for name, arg in passed.items() if self.looks_like_tensor(arg)
                            or self._model_output(arg, node)}, function)  # fmt: skip
        read = next((c for c in ast.walk(function) if isinstance(c, ast.Call)
                     and method_name(c) in HOST_COPY_METHODS and not c.args
                     and isinstance(c.func, ast.Attribute)
                     and root_name(c.func.value) in tensors
                     and not self.under_log_gate(c, function)), None)  # fmt: skip
        context = self._training_context(node) if read is not None else None
        if context is None or self.under_log_gate(node, context) or self.skip_sync(node, context):
            return
        reported = self.__dict__.setdefault("_reads_one_deep", set())
        if read in reported:
            return  # (a helper called every step from several places: told once)
        reported.add(read)
        where = "training loop" if isinstance(context, _LOOP_STATEMENTS) else "training step"
        # at the read: the line the sync audit names at run time, where the two join
        self.report(
            read,
            "TD201",
            f"`{self.code_of(read)}` in `{function.name}` forces a host-device sync every step: "
            f"this {where} calls it at line {node.lineno} (`{self.code_of(node.func)}(...)`): "
            "pass detached device tensors and convert them at log time "
            "(torchdoctor.train.LazyMetrics)",
        )

    def _model_output(self, arg: ast.AST, call: ast.AST) -> bool:
        """``output`` assigned only from a model's call where ``call`` sits (``output =
        self.model(images)``): a tensor the step computed."""
        if not isinstance(arg, ast.Name):
            return False
        values = self.assigned_values(self.enclosing_scope(call), arg.id)
        return bool(values) and all(isinstance(v, ast.Call) and is_model_like(v.func)
                                    for v in values)  # fmt: skip

    def _check_call_one_deep(self, node: ast.Call) -> None:
        """``metric_logger.update(**loss_dict)`` in a training loop, where the project's
        ``MetricLogger.update`` calls ``.item()``: the sync is one call deep."""
        project = self.context.project
        if not isinstance(node.func, ast.Attribute):
            return
        receiver = node.func.value
        if isinstance(receiver, ast.Name) and receiver.id == "self":
            self._check_function_one_deep(node)  # (a method of this class)
            return
        if project is None or not isinstance(receiver, ast.Name):
            return
        args = [*node.args, *(k.value for k in node.keywords)]
        if not args or self._training_context(node) is None:
            return
        values = self.assigned_values(self.enclosing_scope(node), receiver.id)
        classes = {
            (dotted(v.func) or "").rsplit(".", 1)[-1]
            for v in values
            if isinstance(v, ast.Call) and dotted(v.func)
        }
        classes = {c for c in classes if c[:1].isupper()}
        if len(classes) != 1:
            return
        args, scope = [*node.args, *(k.value for k in node.keywords)], self.enclosing_scope(node)
        if not any(self.looks_like_tensor(a) or isinstance(a, ast.Name) and any(  # (per_sample =
                self.looks_like_tensor(v) for v in self.assigned_values(scope, a.id)) for a in args):
            return  # -(m * logp).sum(1): a tensor the step computed, by its assignment)
        context = self._training_context(node)
        if context is None or self.under_log_gate(node, context) or self.skip_sync(node, context):
            return
        cls = next(iter(classes))
        hit = project.method_sync(cls, node.func.attr)
        method = next((f for f in getattr(project.module_class(cls), "body", ())
                       if isinstance(f, FUNCTIONS) and f.name == node.func.attr), None)  # fmt: skip
        if hit is None or method is not None and self.is_training_body(method, full=True):
            return  # (a whole step, KGE's train_step: its reads are told where they are)
        path, line, call = hit
        self.report(
            node,
            "TD201",
            f"`{receiver.id}.{node.func.attr}(...)` reads tensors on the host (`{call}` in "
            f"{cls}.{node.func.attr}, {path}:{line}) {every_step_of(context)}: pass detached "
            "device tensors and convert them at log time (torchdoctor.train.LazyMetrics)",
        )

    def _forward_of(self, node: ast.AST) -> ast.AST | None:
        """The ``forward`` method of a class that ``node`` sits in, or None."""
        scope = self.enclosing_scope(node)
        if (
            isinstance(scope, FUNCTIONS)
            and scope.name == "forward"
            and isinstance(self.parent(scope), ast.ClassDef)
        ):
            return scope
        return None

    def _forward_inputs(self, node: ast.AST) -> set[str]:
        """Arguments of the ``forward`` method ``node`` sits in, or of a module-level function
        a ``forward`` of the project calls (tensors, most likely: ``assert (areas > 0).all()``
        in the OKS of a keypoint matcher and criterion)."""
        scope = self._forward_of(node)
        if scope is None:
            scope = self.enclosing_scope(node)
            project, owner = self.context.project, self.parent(scope)
            forward = next((f for f in getattr(owner, "body", ()) if isinstance(f, FUNCTIONS)
                            and f.name == "forward"), None)  # fmt: skip
            if isinstance(scope, FUNCTIONS) and isinstance(owner, ast.ClassDef) and (
                    forward is not None and scope in _run_by_forward(owner, forward)[1:]):
                pass  # (a method its forward runs: wav2vec 2.0's compute_preds)
            elif not (
                isinstance(scope, FUNCTIONS)
                and isinstance(owner, ast.Module)
                and project is not None
                and project.called_in_forward(scope.name, self.context.path) is not None
            ):
                return set()
        return {a.arg for a in [*scope.args.posonlyargs, *scope.args.args]} - {"self"}

    def _forward_tensors(self, node: ast.AST) -> set[str]:
        """:meth:`_forward_inputs` and the names the forward computes from them (``mask = hist
        != 0``; ``lengths = mask.sum(1)``), not read to the host."""
        inputs = self._forward_inputs(node)
        scope = self.enclosing_scope(node)
        return _derived(inputs, scope) if inputs and isinstance(scope, FUNCTIONS) else inputs

    def _reduces_a_forward_input(self, expr: ast.AST) -> bool:
        """``x.sum()`` / ``x.max()`` / ``x.abs().mean()`` / ``(x[0] >= n).any()`` of a forward
        argument, or of a name
        the forward assigns only from its submodules' outputs (``scores = self.fc(x)``); or a
        name the forward assigns once such a reduction (``num_pos = mask.sum()``)."""
        scope = self._forward_of(expr) if isinstance(expr, ast.Name) else None
        if scope is not None:
            values = self.assigned_values(scope, expr.id)  # type: ignore[attr-defined]
            return len(values) == 1 and isinstance(values[0], ast.Call) and (
                self._reduces_a_forward_input(values[0])
                or bool(self.callee(values[0]) & _TORCH_SCALARS))  # (r_det = torch.det(r))
        if not isinstance(expr, ast.Call) or method_name(expr) not in REDUCTIONS | TRUTH_METHODS:
            return False
        root = expr.func.value
        while True:  # (edge_index[0] >= n).any(): the tensor compared, indexed or called on
            if isinstance(root, ast.Call) and isinstance(root.func, ast.Attribute):
                root = root.func.value
            elif isinstance(root, ast.Compare) and len(root.ops) == 1:
                root = root.left
            elif isinstance(root, ast.Subscript):
                root = root.value
            else:
                break
        if not isinstance(root, ast.Name):
            return False
        if root.id in self._forward_inputs(expr):
            return True
        if root.id in self._forward_tensors(expr):  # (or made from them by torch: a focal
            made = self.assigned_values(self.enclosing_scope(expr), root.id)  # loss's positive
            callees = {n for v in made for c in ast.walk(v) if isinstance(c, ast.Call)  # =
                       for n in self.callee(c)}  # torch.ge(iou_max, 0.5); not NumPy's arrays)
            if any(n.startswith("torch.") for n in callees) and not any(
                    n.startswith("numpy.") for n in callees):  # fmt: skip
                return True
        scope = self._forward_of(expr)
        if scope is None:
            return False
        values = [*self.assigned_values(scope, root.id), *_unpacked(scope, root.id)]
        made = [v for v in values if not _updates(v, root.id)]  # (scores = scores / 10)
        return bool(made) and all(_submodule_output(v) or self._compares_a_forward_tensor(
            scope, v) for v in made)  # fmt: skip

    def under_tensor_test(self, node: ast.AST) -> bool:
        """``node`` sits in the body of an ``if`` whose test is a tensor's truth value (HiFi-GAN's
        ``if torch.min(y) < -1.: print('min value is ', torch.min(y))``): the body runs only
        when the data says so; the read every step is the test, reported on its own line.

        Example:
            >>> from torchdoctor.lint import lint_source
            >>> src = ("import torch\\nfor x, y in loader:\\n    loss = model(x).sum()\\n"
            ...        "    if torch.isnan(loss):\\n        print(loss.item())\\n"
            ...        "    loss.backward()\\n    opt.step()\\n")
            >>> [(f.code, f.line) for f in lint_source(src) if f.code == "TD201"]
            [('TD201', 4)]
        """
        child, parent, scope = node, self.parent(node), self.enclosing_scope(node)
        while parent is not None and parent is not scope:
            if (isinstance(parent, ast.If) and any(s is child for s in parent.body)
                    and self._is_tensor_truth_test(parent.test)):  # fmt: skip
                return True
            child, parent = parent, self.parent(parent)
        return False

    def torch_result(self, operand: ast.AST) -> bool:
        """``torch.min(y)`` in ``if torch.min(y) < -1.:`` (HiFi-GAN's mel_spectrogram, run on
        the generator's output every step): a torch function's result is a tensor, so a
        comparison with it is one too and its truth value a host read (not ``torch.numel(x)``,
        ``torch.cuda.device_count()``: Python numbers)."""
        return isinstance(operand, ast.Call) and any(
            TORCH_TENSOR_FUNCTION.match(n) and n not in NOT_TENSORS for n in self.callee(operand))

    def _compares_a_forward_tensor(self, scope: ast.AST, value: ast.AST) -> bool:
        """``fg = labels > 0`` (a bool tensor) with ``labels`` an argument of the forward
        ``scope``, or assigned / unpacked only from a submodule's or the module's own helper's
        output (``props, labels = self.sample_proposals(props, targets)``: Mask R-CNN's ROI
        heads, ``if fg.sum() == 0:``)."""
        if not (isinstance(value, ast.Compare) and len(value.ops) == 1
                and isinstance(value.left, ast.Name)):  # fmt: skip
            return False
        name = value.left.id
        if name in self._forward_inputs(value):
            return True
        values = [*self.assigned_values(scope, name), *_unpacked(scope, name)]
        made = [v for v in values if not _updates(v, name)]
        return bool(made) and all(_submodule_output(v) for v in made)


#: tensor methods that return the same values reshaped: ``self.fc(x).view(b, -1)`` is a tensor
_RESHAPES = frozenset({"reshape", "view", "transpose", "permute", "squeeze", "unsqueeze",
                       "flatten", "contiguous"})  # fmt: skip


def _module_lambda(call: ast.Call) -> ast.FunctionDef | None:
    """``to_np = lambda x: x.detach().cpu().numpy()`` at the top of the file (dreamerv3-torch):
    the function ``to_np(loss)`` runs, read as a ``def`` returning the lambda's body."""
    module = parent(call)
    while module is not None and not isinstance(module, ast.Module):
        module = parent(module)
    for s in getattr(module, "body", ()) if isinstance(call.func, ast.Name) else ():
        if (isinstance(s, ast.Assign) and isinstance(s.value, ast.Lambda)
                and [dotted(t) for t in s.targets] == [call.func.id]):  # type: ignore[attr-defined]
            return ast.FunctionDef(name=call.func.id, args=s.value.args,  # type: ignore[attr-defined]
                                   body=[ast.Return(s.value.body)], decorator_list=[])
    return None


def _submodule_output(value: ast.AST) -> bool:
    """``self.fc(x)`` (or ``.view(...)`` of it): a call of a submodule the forward's class holds
    (its output a tensor; methods are named verbs, not attributes with layers' names, so
    ``self.encode(x)`` counts too: a module's own helper returning a tensor).

    Example:
        >>> _submodule_output(ast.parse("self.fc(x)").body[0].value)
        True
        >>> _submodule_output(ast.parse("x.fc(y)").body[0].value)
        False
    """
    while isinstance(value, ast.Call) and method_name(value) in _RESHAPES:
        value = value.func.value  # type: ignore[attr-defined]
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and isinstance(value.func.value, ast.Name)
        and value.func.value.id == "self"
    )


def _unpacked(scope: ast.AST, name: str) -> list[ast.AST]:
    """The values unpacked into ``name`` in ``scope``: ``s, t = self.st(x)`` gives the call,
    ``s, t = s * m, t * m`` the element ``s * m``.

    Example:
        >>> fn = ast.parse("def f(self, x):\\n    s, t = self.st(x)\\n    s, t = s * 2, t\\n").body[0]
        >>> [ast.unparse(v) for v in _unpacked(fn, "s")]
        ['self.st(x)', 's * 2']
    """
    found = []
    for node in ast.walk(scope):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if not isinstance(target, ast.Tuple):
                continue
            for k, element in enumerate(target.elts):
                if isinstance(element, ast.Name) and element.id == name:
                    value = node.value
                    if isinstance(value, ast.Tuple) and len(value.elts) == len(target.elts):
                        value = value.elts[k]
                    found.append(value)
    found.sort(key=lambda v: (v.lineno, v.col_offset))
    return found


def _updates(value: ast.AST, name: str) -> bool:
    """``name / 10``, ``name * mask``, ``name.clamp(-10, 10)``: arithmetic on the name itself,
    or a method of it, keeps what it is.

    Example:
        >>> _updates(ast.parse("scores / 10").body[0].value, "scores")
        True
    """
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
        return isinstance(value.func.value, ast.Name) and value.func.value.id == name
    stack = [value] if isinstance(value, ast.BinOp) else []
    while stack:  # (self.scale * s * (1 - m): the name among the arithmetic's operands)
        node = stack.pop()
        if isinstance(node, ast.BinOp):
            stack += [node.left, node.right]
        elif isinstance(node, ast.Name) and node.id == name:
            return True
    return False
