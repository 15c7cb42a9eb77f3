"""TD4xx: data pipeline (seed 004): DataLoader workers, pinned memory, persistent workers."""

from __future__ import annotations

import libcst as cst

from torchdoctor.lint.visitor import RuleVisitor, code_of

DATALOADERS = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})


def _literal(expr: cst.BaseExpression) -> object:
    """Python value of a literal int/bool/None argument, else a sentinel."""
    if isinstance(expr, cst.Integer):
        return expr.evaluated_value
    if isinstance(expr, cst.Name) and expr.value in {"True", "False", "None"}:
        return {"True": True, "False": False, "None": None}[expr.value]
    return _UNKNOWN


_UNKNOWN = object()


class DataRules(RuleVisitor):
    """TD401 no workers; TD402 no pinned memory while batches go to CUDA; TD403 workers that are
    not persistent."""

    CODES = ("TD401", "TD402", "TD403")
    TRIGGERS = (("DataLoader",),)

    def visit_Call(self, node: cst.Call) -> None:
        if not self.callee(node) & DATALOADERS:
            return
        if any(a.star for a in node.args):
            return  # **kwargs: the options are not visible statically
        kwargs = {a.keyword.value: a.value for a in node.args if a.keyword is not None}
        workers = kwargs.get("num_workers")
        if workers is None or _literal(workers) == 0:
            self.report(
                node,
                "TD401",
                "DataLoader without num_workers > 0 loads every batch on the training thread: "
                "set num_workers (2-8) so loading overlaps compute",
            )
        pin = kwargs.get("pin_memory")
        if self.context.uses_cuda and (pin is None or _literal(pin) is False):
            self.report(
                node,
                "TD402",
                "DataLoader without pin_memory=True while this file moves data to CUDA: pin it "
                "and copy with .to(device, non_blocking=True)",
            )
        if workers is None or _literal(workers) == 0:
            return
        persistent = kwargs.get("persistent_workers")
        if persistent is None or _literal(persistent) is False:
            value = _literal(workers)
            hint = (
                "persistent_workers=True"
                if value is not _UNKNOWN
                else f"persistent_workers={code_of(workers)} > 0"
            )
            self.report(
                node,
                "TD403",
                f"DataLoader with workers but without persistent_workers: they are respawned "
                f"every epoch; pass {hint}",
            )
