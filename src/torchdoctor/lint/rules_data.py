"""TD4xx: data pipeline (seed 004): DataLoader workers, pinned memory, persistent workers."""

from __future__ import annotations

import ast
import re

from torchdoctor.lint import loader_passes
from torchdoctor.lint.loader_datasets import LoaderDatasets
from torchdoctor.lint.loader_passes import batches_stay_on_host, iterated_once, one_batch
from torchdoctor.lint.pinned_copies import LOOP_WRAPPERS, PinnedCopies, loader_of
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import FOR, same_file_callee
from torchdoctor.lint.visitor import (
    FUNCTIONS,
    RuleVisitor,
    dotted,
    has_star,
    keyword,
    target_names,
)

#: a loop body that trains or evaluates (a DataLoader built in it is built every epoch)
_EPOCH_WORK = re.compile(r"\b(train|test|evaluate|validate)\w*\(|\.backward\(|\.step\(|\byield\b")
DATALOADERS = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})


def _literal(expr: ast.AST) -> object:
    """Python value of a literal int/bool/None argument, else a sentinel."""
    if isinstance(expr, ast.Constant) and (expr.value is None or isinstance(expr.value, int)):
        return expr.value
    return _UNKNOWN


_UNKNOWN = object()
_TEST_NAME = re.compile(r"(^|_)(test|testing)(_|$)", re.IGNORECASE)
#: a dataset class named for the test split: TestImages, KittiTest, Test_Set
_TEST_CLASS = re.compile(r"(^|[a-z\d_])Test(ing)?([A-Z\d_]|$)")


#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).
RULES = (
    Rule(
        "TD401",
        "dataloader-no-workers",
        "warning",
        "DataLoader without num_workers > 0 loads batches on the main thread, between steps "
        "(not over a TensorDataset, made in place or by a function of the project: tensors in "
        "memory, indexing them is cheaper than handing batches over from workers)",
        "set num_workers (e.g. 2-8) so loading overlaps compute",
        "DataLoader(ds, batch_size=64)",
        "DataLoader(ds, batch_size=64, num_workers=4)",
        seed="004",
    ),
    Rule(
        "TD402",
        "dataloader-no-pin-memory",
        "info",
        "DataLoader without pin_memory=True while batches go to CUDA",
        "pin_memory=True, and .to(device, non_blocking=True) for overlapped copies",
        "DataLoader(ds, num_workers=4)",
        "DataLoader(ds, num_workers=4, pin_memory=True)",
        seed="004",
        cuda_only=True,
    ),
    Rule(
        "TD403",
        "dataloader-no-persistent-workers",
        "info",
        "DataLoader with workers but without persistent_workers=True respawns them each epoch; "
        "one built anew in every epoch's loop (a loop that trains or evaluates) starts them "
        "each time whatever it says",
        "persistent_workers=True (or `persistent_workers=num_workers > 0`); a loader built in "
        "the epoch loop: build it once before it",
        "DataLoader(ds, num_workers=4)",
        "DataLoader(ds, num_workers=4, persistent_workers=True)",
        seed="004",
    ),
    Rule(
        "TD404",
        "pinned-batch-copied-blocking",
        "info",
        "a DataLoader pins its batches (pin_memory=True) but the loop copies them to the device "
        "without non_blocking=True: the copy waits instead of overlapping",
        "x.to(device, non_blocking=True) (x.cuda(non_blocking=True)); the pinned buffer is what "
        "makes the asynchronous copy possible",
        "loader = DataLoader(ds, pin_memory=True)\nfor x, y in loader:\n    x = x.to(device)",
        "loader = DataLoader(ds, pin_memory=True)\nfor x, y in loader:\n"
        "    x = x.to(device, non_blocking=True)",
        seed="004",
        autofix=True,
        cuda_only=True,
    ),
)
def _pinned_call(node: ast.AST | None) -> bool:
    """A ``DataLoader(..., pin_memory=True)`` call (no ``**kwargs`` hiding the options)."""
    return (isinstance(node, ast.Call) and (dotted(node.func) or "").endswith("DataLoader")
            and not has_star(node) and _literal(keyword(node, "pin_memory")) is True)  # fmt: skip


def _literal_dict(value: ast.AST) -> dict[str, ast.AST] | None:
    """The entries of ``dict(a=1, b=2)`` / ``{"a": 1, "b": 2}`` (string keys, no ``**``);
    None for anything else.

    Example:
        >>> sorted(_literal_dict(ast.parse("dict(num_workers=4, pin_memory=True)", mode="eval").body))
        ['num_workers', 'pin_memory']
        >>> _literal_dict(ast.parse("dict(base, pin_memory=True)", mode="eval").body) is None
        True
    """
    if isinstance(value, ast.Call) and dotted(value.func) == "dict" and not value.args and all(
            k.arg is not None for k in value.keywords):  # fmt: skip
        return {k.arg: k.value for k in value.keywords}  # type: ignore[misc]
    if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                                           for k in value.keys):  # fmt: skip
        return {k.value: v for k, v in zip(value.keys, value.values)}  # type: ignore[union-attr]
    return None


def _made_by(function: ast.AST, value: ast.AST) -> ast.AST | None:
    """What ``function`` returns as ``value``: the value itself, for a name the call last
    assigned to it in the function (``train_loader = DataLoader(...)``), and for a call of a
    lambda the function binds, its body (``mk = lambda s: DataLoader(...)``; ``mk(train)``)."""
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        maker = _made_by(function, value.func)
        return maker.body if isinstance(maker, ast.Lambda) else value
    if not isinstance(value, ast.Name):
        return value
    made = None
    for node in ast.walk(function):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == value.id):
            made = node.value  # fmt: skip
    return made


class DataRules(LoaderDatasets, PinnedCopies, RuleVisitor):
    """TD401 no workers; TD402 no pinned memory while batches go to CUDA; TD403 workers that are
    not persistent; TD404 pinned batches copied without non_blocking.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> [f.code for f in lint_source("from torch.utils.data import DataLoader\\nloader = DataLoader(ds, batch_size=32)\\n")]
        ['TD401']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (("DataLoader",), (r"(?i)loader\w*\(",), (r"\bfor\b", r"\.cuda\(|\.to\("))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        """TD404 in a module-level function whose loop iterates a parameter that another
        file of the project passes a pinned DataLoader (``train(cfg, train_loader)``)."""
        project = self.context.project
        if project is not None and isinstance(self.parent(node), ast.Module):
            params = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
            iterated = {loader_of(n.iter) for n in ast.walk(node) if isinstance(n, ast.For)}
            for k, param in enumerate(params):
                site = project.pinned_loader_passed(node.name, self.context.path, k, param) if (
                    param in iterated) else None  # fmt: skip
                if site is not None:
                    reported = self.context.cache.setdefault(("TD404 reported",), set())
                    label = f"`{param}` (the DataLoader of {site[0]}:{site[1]})"
                    self._check_loops(node, param, reported, label)

    def visit_Call(self, node: ast.Call) -> None:
        if not self.callee(node) & DATALOADERS:
            self._check_imported_loader(node)
            return
        kwargs = self._keywords(node)
        if kwargs is None:
            return  # *args / **kwargs: the options are not visible statically
        workers = kwargs.get("num_workers")
        in_memory = self._tensor_dataset(node)  # None, "host", "device", "indices" or
        per_item = in_memory == "device, read per item"  # (... a file read and a copy per item)
        if (workers is None or _literal(workers) == 0) and (in_memory is None or per_item):
            self.report(
                node,
                "TD401",
                "DataLoader without num_workers > 0 loads every batch on the main thread: "
                "set num_workers (2-8) so loading overlaps compute" + (
                    "; its Dataset copies each item to the device, which workers cannot do: "
                    "move that copy to the loop (one .to(device, non_blocking=True) per batch)"
                    if per_item else ""),  # fmt: skip
            )
        pin = kwargs.get("pin_memory")
        project = self.context.project
        uses_cuda = self.context.uses_cuda or bool(project is not None and project.uses_cuda)
        if uses_cuda and (pin is None or _literal(pin) is False) and in_memory not in (
                "device", "indices") and not per_item and not batches_stay_on_host(self, node) and (
                not one_batch(self, node)):  # fmt: skip
            self.report(
                node,
                "TD402",
                "DataLoader without pin_memory=True while "
                f"{'this file' if self.context.uses_cuda else 'the project'} moves data to "
                "CUDA: pin it and copy with .to(device, non_blocking=True)",
            )
        if pin is not None and _literal(pin) is True:
            self._check_blocking_copies(node)
        if workers is None or _literal(workers) == 0 or self._iterated_once(node) or (
                loader_passes.walked_where_built(self, node)):  # (for x in DataLoader(...): one pass)
            return
        sampler = kwargs.get("sampler")
        if isinstance(sampler, ast.Call) and any(k.arg == "num_samples" for k in sampler.keywords):
            return  # (minGPT: RandomSampler(..., num_samples=int(1e10)): one endless iterator)
        persistent = kwargs.get("persistent_workers")
        if self._in_epoch_loop(node):  # (built in every epoch: workers start each time)
            self.report(
                node,
                "TD403",
                "DataLoader with workers built anew in every iteration of this loop: its workers "
                "start again each time, whatever persistent_workers says; build it once before "
                "the loop, with persistent_workers=True",
            )
        elif persistent is None or _literal(persistent) is False:
            value = _literal(workers)
            hint = (
                "persistent_workers=True"
                if value is not _UNKNOWN
                else f"persistent_workers={self.code_of(workers)} > 0"
            )
            self.report(
                node,
                "TD403",
                f"DataLoader with workers but without persistent_workers: they are respawned "
                f"every epoch; pass {hint}",
            )

    def _keywords(self, call: ast.Call) -> dict[str | None, ast.AST] | None:
        """The keywords of ``call``, with those of a ``**kw`` the function binds once to a
        literal dict and never changes (MoCo's ``kw = dict(num_workers=w, pin_memory=True)``
        then ``DataLoader(ds, bs, **kw)``); None when some are not visible statically."""
        if any(isinstance(a, ast.Starred) for a in call.args):
            return None
        found: dict[str | None, ast.AST] = {}
        scope = self.enclosing_scope(call)
        for kw in call.keywords:
            if kw.arg is not None:
                found[kw.arg] = kw.value
                continue
            name = kw.value.id if isinstance(kw.value, ast.Name) else None
            values = self.assigned_values(scope, name) if name else []
            spread = _literal_dict(values[0]) if len(values) == 1 else None
            changed = any(isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store)
                          and dotted(n.value) == name or isinstance(n, ast.Attribute)
                          and dotted(n.value) == name for n in ast.walk(scope))  # fmt: skip
            if spread is None or changed:
                return None
            found.update(spread)
        return found

    # -- TD404 --------------------------------------------------------------------------------
    def _check_blocking_copies(self, call: ast.Call) -> None:
        """Loops over the pinned loader ``call`` makes: their ``.to(device)`` / ``.cuda()`` of
        the batch without ``non_blocking=True`` (see :meth:`_pinned_loaders`)."""
        reported = self.context.cache.setdefault(("TD404 reported",), set())
        for scope, loader in self._pinned_loaders(call):
            self._check_loops(scope, loader, reported)
        node, parent = call, self.parent(call)  # (built in the loop's header: `for x, y in
        while isinstance(parent, ast.Call) and node in parent.args and (  # DataLoader(...):`)
            (dotted(parent.func) or "").rsplit(".", 1)[-1] in LOOP_WRAPPERS
        ):
            node, parent = parent, self.parent(parent)
        if isinstance(parent, ast.For) and parent.iter is node:
            self._check_loop(parent, "the DataLoader", reported)

    def _check_imported_loader(self, call: ast.Call) -> None:
        """``loader = build_loader(args)`` (or ``train, val = build_loaders(cfg)``), a function
        of another file of the project that returns pinned loaders: TD404 in this
        file's loops over them."""
        parent, project = self.parent(call), self.context.project
        name = call.func.id if isinstance(call.func, ast.Name) else None
        if (project is None or name is None or "loader" not in name.lower()
                or same_file_callee(call) is not None or not isinstance(parent, ast.Assign)
                or len(parent.targets) != 1):
            return  # fmt: skip
        target = parent.targets[0]
        maker = project.module_function(name)
        if maker is None or not isinstance(target, ast.Name | ast.Tuple):
            return
        names = [target] if isinstance(target, ast.Name) else target.elts
        pinned = [False] * len(names)
        for ret in (r.value for r in ast.walk(maker) if isinstance(r, ast.Return)):
            parts = [ret] if isinstance(target, ast.Name) else (
                ret.elts if isinstance(ret, ast.Tuple) and len(ret.elts) == len(names) else [])
            for k, part in enumerate(parts):
                pinned[k] = pinned[k] or _pinned_call(_made_by(maker, part))
        reported = self.context.cache.setdefault(("TD404 reported",), set())
        for element, is_pinned in zip(names, pinned):
            if is_pinned and isinstance(element, ast.Name):
                self._check_loops(self.enclosing_scope(call), element.id, reported)

    def _pinned_loaders(self, call: ast.Call) -> list[tuple[ast.AST, str]]:
        """``(scope, name)`` pairs naming the pinned loader ``call`` makes: the name it is
        assigned to in its scope, or in the scopes of the file assigning a call of the
        function that returns it (``loader = make_loader(...)``); and the parameter of a
        function of the file it is passed to (``train_epoch(model, train_loader, ...)``)."""
        parent = self.parent(call)
        named: list[tuple[ast.AST, str]] = []
        if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
            loader = dotted(parent.targets[0])
            if loader is not None:
                scope = self.enclosing_scope(call)
                if loader.startswith("self.") and isinstance(self.parent(scope), ast.ClassDef):
                    scope = self.parent(scope)  # (self.train_loader, iterated by another method)
                named.append((scope, loader))
                named += self._returned_in_tuple(call, loader)
        elif isinstance(parent, ast.Tuple) and isinstance(self.parent(parent), ast.Return) and (
                isinstance(self.enclosing_scope(call), FUNCTIONS)):  # (return train_dl, val_dl)
            at, maker = parent.elts.index(call), self.enclosing_scope(call).name  # type: ignore[attr-defined]
            for assign in ast.walk(self.context.tree) if self.context.tree else ():
                target = assign.targets[0] if isinstance(assign, ast.Assign) else None
                if (isinstance(target, ast.Tuple) and len(target.elts) == len(parent.elts)
                        and isinstance(assign.value, ast.Call) and dotted(assign.value.func) == maker
                        and isinstance(target.elts[at], ast.Name)):  # fmt: skip
                    named.append((self.enclosing_scope(assign), target.elts[at].id))
        elif isinstance(parent, ast.Return) and isinstance(self.enclosing_scope(call), FUNCTIONS):
            maker = self.enclosing_scope(call).name  # type: ignore[attr-defined]
            for assign in ast.walk(self.context.tree) if self.context.tree else ():
                if (isinstance(assign, ast.Assign) and len(assign.targets) == 1
                        and isinstance(assign.value, ast.Call)
                        and dotted(assign.value.func) == maker
                        and isinstance(assign.targets[0], ast.Name)):  # fmt: skip
                    named.append((self.enclosing_scope(assign), assign.targets[0].id))
        passed = []
        for scope, loader in named:
            for use in ast.walk(scope):
                if not isinstance(use, ast.Call):
                    continue
                function = same_file_callee(use) if isinstance(use.func, ast.Name) else (
                    self._method_of_the_file(use.func.attr)  # (s.train_network(loader=...))
                    if isinstance(use.func, ast.Attribute) else None)  # fmt: skip
                params = [a.arg for a in function.args.args] if function is not None else []
                if isinstance(use.func, ast.Attribute):
                    params = params[1:]  # (self)
                for k, arg in enumerate(use.args[: len(params)]):
                    if dotted(arg) == loader:
                        passed.append((function, params[k]))
                for kw in use.keywords:
                    if kw.arg in params and dotted(kw.value) == loader:
                        passed.append((function, kw.arg))
        return named + passed

    def _method_of_the_file(self, name: str) -> ast.FunctionDef | None:
        """The one method named ``name`` among the file's classes, else None."""
        tree = self.context.tree
        found = [f for c in (tree.body if tree is not None else ()) if isinstance(c, ast.ClassDef)
                 for f in c.body if isinstance(f, ast.FunctionDef) and f.name == name]  # fmt: skip
        return found[0] if len(found) == 1 else None

    def _returned_in_tuple(self, call: ast.Call, loader: str) -> list[tuple[ast.AST, str]]:
        """``return train, val, test`` (or ``return loader``) of the function making ``loader``:
        the name each call of it in this file binds it to (``train_loader, _, _ = get_loaders()``)."""
        scope, found = self.enclosing_scope(call), []
        for ret in ast.walk(scope) if isinstance(scope, FUNCTIONS) else ():
            value = ret.value if isinstance(ret, ast.Return) else None
            parts = value.elts if isinstance(value, ast.Tuple) else [value] if value is not None else []
            at = [i for i, p in enumerate(parts) if isinstance(p, ast.Name) and p.id == loader]
            for assign in ast.walk(self.context.tree) if at else ():
                target = assign.targets[0] if isinstance(assign, ast.Assign) else None
                names = target.elts if isinstance(target, ast.Tuple) else [target]  # (YOLOv3's)
                if (target is not None and len(names) == len(parts) and isinstance(assign.value, ast.Call)
                        and dotted(assign.value.func) == scope.name  # type: ignore[attr-defined]
                        and isinstance(names[at[0]], ast.Name)):  # fmt: skip
                    found.append((self.enclosing_scope(assign), names[at[0]].id))  # type: ignore[attr-defined]
        return found

    def _iterated_once(self, call: ast.Call) -> bool:
        """A test loader (``test_loader = DataLoader(test_set, ...)``, or over ``DS(root, "test")``)
        is iterated once: its workers are spawned once whatever ``persistent_workers`` says."""
        parent = self.parent(call)
        names = []
        if isinstance(parent, (ast.Assign, ast.AnnAssign)):
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            names += [dotted(t) or "" for t in targets]
        if call.args:
            names.append(dotted(call.args[0]) or "")
        first = call.args[0] if call.args else None
        made_by = (dotted(first.func) or "") if isinstance(first, ast.Call) else ""
        target = names[0] if names and "." not in names[0] else None
        scope = self.enclosing_scope(call)
        bound = parent if isinstance(parent, (ast.Assign, ast.AnnAssign)) else None
        if target and iterated_once(self, target, scope, bound_at=bound):
            return True  # (handed to one function that walks it once: an export script's)
        split = made_by and target and any(isinstance(a, ast.Constant) and _TEST_NAME.search(str(a.value))
                                           for a in (*first.args, *(k.value for k in first.keywords)))
        if not any(_TEST_NAME.search(n.rsplit(".", 1)[-1]) for n in names) and not (
                _TEST_CLASS.search(made_by.rsplit(".", 1)[-1])) and not (split and any(  # (DS(root,
                isinstance(f, ast.For | ast.comprehension) and dotted(f.iter) == target for f in ast.walk(scope))):
            return False  # ("test") walked here, not handed on: Lightning's trainer.fit(m, train, val))
        # ...unless this function itself iterates it every epoch (minGPT's trainer)
        if target and self._used_in_a_loop(target, scope):
            return False
        # ...or the function returns it to a caller of this file that does
        for ret in ast.walk(scope) if target and isinstance(scope, FUNCTIONS) else ():
            if not isinstance(ret, ast.Return) or ret.value is None:
                continue
            parts = ret.value.elts if isinstance(ret.value, ast.Tuple) else [ret.value]
            at = [i for i, p in enumerate(parts) if isinstance(p, ast.Name) and p.id == target]
            if at and self._caller_loops_over(scope.name, at[0], len(parts)):  # type: ignore[attr-defined]
                return False
        return True

    def _in_epoch_loop(self, call: ast.Call) -> bool:
        """``call`` runs in every iteration of a loop that trains or evaluates (its variable
        names epochs, or its body runs ``train``/``test``/``backward``/``.step(``) on the same
        data each time: not a set-up loop building one loader per dataset, nor one per task
        of a continual-learning loop (its arguments use the loop's names)."""
        data = call.args[:1] or [k.value for k in call.keywords if k.arg == "dataset"]
        used = {n.id for arg in data for n in ast.walk(arg)  # (its dataset: a sampler made
                if isinstance(n, ast.Name)}  # per epoch, seed=epoch, is no new data)
        for loop in self.enclosing_loops(call):
            if not isinstance(loop, (*FOR, ast.While)):
                continue
            bound = set(target_names(loop.target)) if isinstance(loop, FOR) else set()
            bound |= {t for n in ast.walk(loop) if isinstance(n, (ast.Assign, ast.comprehension))
                      for t in (target_names(n.target) if isinstance(n, ast.comprehension)
                                else [x for tg in n.targets for x in target_names(tg)])}  # fmt: skip
            if used & bound:
                return False  # (its data changes with the loop: a continual-learning task's)
            if isinstance(loop, FOR) and any("epoch" in n.lower() for n in target_names(loop.target)):
                return True
            text = "\n".join(self.context.lines[loop.lineno - 1 : loop.end_lineno])
            if _EPOCH_WORK.search(text):
                return True
        return False

    def _used_in_a_loop(self, name: str, scope: ast.AST) -> bool:
        return any(isinstance(use, ast.Name) and use.id == name and isinstance(use.ctx, ast.Load)
                   and self.enclosing_loops(use) for use in ast.walk(scope))  # fmt: skip

    def _caller_loops_over(self, function: str, index: int, count: int) -> bool:
        """A call of ``function`` in this file unpacks its ``index``-th returned value (of
        ``count``) into a name that its caller uses inside a loop (an evaluation per epoch)."""
        for call in ast.walk(self.context.tree) if self.context.tree else ():
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == function):
                continue
            assign = self.parent(call)
            if not isinstance(assign, ast.Assign) or len(assign.targets) != 1:
                continue
            target = assign.targets[0]
            if count > 1:
                elts = target.elts if isinstance(target, ast.Tuple) else []
                target = elts[index] if len(elts) == count else None
            if isinstance(target, ast.Name) and self._used_in_a_loop(
                target.id, self.enclosing_scope(call)
            ):
                return True
        return False
