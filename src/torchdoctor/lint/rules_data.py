"""TD4xx: data pipeline (seed 004): DataLoader workers, pinned memory, persistent workers."""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import RuleVisitor, dotted, has_star

DATALOADERS = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})


def _literal(expr: ast.AST) -> object:
    """Python value of a literal int/bool/None argument, else a sentinel."""
    if isinstance(expr, ast.Constant) and (expr.value is None or isinstance(expr.value, int)):
        return expr.value
    return _UNKNOWN


_UNKNOWN = object()
_TEST_NAME = re.compile(r"(^|_)(test|testing)(_|$)", re.IGNORECASE)


#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).
RULES = (
    Rule(
        "TD401",
        "dataloader-no-workers",
        "warning",
        "DataLoader without num_workers > 0 loads batches on the training thread",
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
    ),
    Rule(
        "TD403",
        "dataloader-no-persistent-workers",
        "info",
        "DataLoader with workers but without persistent_workers=True respawns them each epoch",
        "persistent_workers=True (or `persistent_workers=num_workers > 0`)",
        "DataLoader(ds, num_workers=4)",
        "DataLoader(ds, num_workers=4, persistent_workers=True)",
        seed="004",
    ),
)


class DataRules(RuleVisitor):
    """TD401 no workers; TD402 no pinned memory while batches go to CUDA; TD403 workers that are
    not persistent.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> [f.code for f in lint_source("from torch.utils.data import DataLoader\\nloader = DataLoader(ds, batch_size=32)\\n")]
        ['TD401']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (("DataLoader",),)

    def visit_Call(self, node: ast.Call) -> None:
        if not self.callee(node) & DATALOADERS:
            return
        if has_star(node):
            return  # **kwargs: the options are not visible statically
        kwargs = {kw.arg: kw.value for kw in node.keywords}
        workers = kwargs.get("num_workers")
        if workers is None or _literal(workers) == 0:
            self.report(
                node,
                "TD401",
                "DataLoader without num_workers > 0 loads every batch on the training thread: "
                "set num_workers (2-8) so loading overlaps compute",
            )
        pin = kwargs.get("pin_memory")
        project = self.context.project
        uses_cuda = self.context.uses_cuda or bool(project is not None and project.uses_cuda)
        if uses_cuda and (pin is None or _literal(pin) is False):
            self.report(
                node,
                "TD402",
                "DataLoader without pin_memory=True while "
                f"{'this file' if self.context.uses_cuda else 'the project'} moves data to "
                "CUDA: pin it and copy with .to(device, non_blocking=True)",
            )
        if workers is None or _literal(workers) == 0 or self._iterated_once(node):
            return
        persistent = kwargs.get("persistent_workers")
        if persistent is None or _literal(persistent) is False:
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

    def _iterated_once(self, call: ast.Call) -> bool:
        """A test loader (``test_loader = DataLoader(test_set, ...)``) is iterated once: its
        workers are spawned once whatever ``persistent_workers`` says."""
        parent = self.parent(call)
        names = []
        if isinstance(parent, (ast.Assign, ast.AnnAssign)):
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            names += [dotted(t) or "" for t in targets]
        if call.args:
            names.append(dotted(call.args[0]) or "")
        if not any(_TEST_NAME.search(n.rsplit(".", 1)[-1]) for n in names):
            return False
        # ...unless this function itself iterates it every epoch (minGPT's trainer)
        target = names[0] if names and "." not in names[0] else None
        scope = self.enclosing_scope(call)
        for use in ast.walk(scope) if target else ():
            if isinstance(use, ast.Name) and use.id == target and isinstance(use.ctx, ast.Load):
                if self.enclosing_loops(use):
                    return False
        return True
