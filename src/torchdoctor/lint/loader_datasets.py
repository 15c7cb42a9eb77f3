"""What a DataLoader's dataset is, read from source (TD401 / TD402 read it): a
``TensorDataset`` of host tensors (a batch is one gather: workers would only add pickling), one
of tensors already on the device, or a Dataset whose ``__getitem__`` copies each item to the
device itself (workers cannot use CUDA, and pinning a device tensor fails). A mixin of the data
rules' visitor.

Example:
    >>> from torchdoctor.lint import lint_source
    >>> src = ("import torch\\nfrom torch.utils.data import DataLoader, TensorDataset\\n"
    ...        "loader = DataLoader(TensorDataset(x.cuda(), y.cuda()), batch_size=8)\\n")
    >>> [f.code for f in lint_source(src)]
    []
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.call_index import calls_named
from torchdoctor.lint.dataset_splits import split_into, unsplit
from torchdoctor.lint.syntax import same_file_callee
from torchdoctor.lint.tensor_values import HOST_FACTORIES
from torchdoctor.lint.visitor import dotted, method_name


def _items(container: ast.AST) -> list[ast.AST]:
    """The values a dict / list literal or comprehension holds (what ``x[k]`` can be)."""
    if isinstance(container, ast.DictComp):
        return [container.value]
    if isinstance(container, ast.ListComp):
        return [container.elt]
    if isinstance(container, ast.Dict):
        return [v for v in container.values if v is not None]
    return list(container.elts) if isinstance(container, ast.List | ast.Tuple) else []


#: calls that read an item from storage (a file-backed dataset: workers pay off), also an
#: HDF5 or Parquet file opened in ``__getitem__`` (``h5py.File(path, "r")``, STEAD's waveforms)
_READS = re.compile(r"(?i)open|load|read|fromfile|decode|file$")
#: Python work per element of an item (a dict remap of every token, ``[vocab[t] for t in
#: raw]``): CPU-bound per item, which workers would overlap with the step
_PER_ELEMENT = (ast.For, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _bare_tensor(rules, value: ast.AST) -> str | None:
    """``torch.randint(3, V, (n, L))``, or its ``.cuda()`` / ``.to(device)``: a tensor handed
    to the DataLoader as the dataset itself, indexed in memory like a ``TensorDataset``'s
    (``"device"`` when made or moved there, else ``"host"``); None for anything else."""
    moved = False
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and (
            value.func.attr in ("to", "cuda")):  # fmt: skip
        moved = moved or value.func.attr == "cuda" or bool(re.search(r"device|cuda", ast.unparse(value)))
        value = value.func.value
    if not (isinstance(value, ast.Call) and rules.callee(value) & HOST_FACTORIES):
        return None
    made_there = any(k.arg == "device" and not (isinstance(k.value, ast.Constant) and k.value.value == "cpu")
                     for k in value.keywords)  # fmt: skip
    return "device" if moved or made_there else "host"


def _given_the_cpu(call: ast.AST, owner: ast.AST) -> bool:
    """The dataset is made with ``device="cpu"`` (or ``torch.device("cpu")``), by keyword or
    at the place of ``__init__``'s ``device`` parameter: its ``__getitem__``'s ``.to(self.device)``
    leaves the items on the host, a loader over it loads like any other (workers, pinning).

    Example:
        >>> cls = ast.parse("class D:\\n    def __init__(self, n, device): pass").body[0]
        >>> [_given_the_cpu(ast.parse(c).body[0].value, cls)
        ...  for c in ("D(4, device='cpu')", "D(4, 'cpu')", "D(4, dev)", "D(4, torch.device('cpu'))")]
        [True, True, False, True]
    """
    if not isinstance(call, ast.Call):
        return False
    given = next((k.value for k in call.keywords if k.arg == "device"), None)
    init = next((f for f in getattr(owner, "body", ()) if isinstance(f, ast.FunctionDef)
                 and f.name == "__init__"), None)  # fmt: skip
    params = [a.arg for a in init.args.args[1:]] if init is not None else []
    if given is None and "device" in params and params.index("device") < len(call.args):
        given = call.args[params.index("device")]
    if isinstance(given, ast.Call) and dotted(given.func) in ("torch.device", "device") and given.args:
        given = given.args[0]
    return isinstance(given, ast.Constant) and given.value == "cpu"


class LoaderDatasets:
    """Mixin for :class:`~torchdoctor.lint.rules_data.DataRules` (a RuleVisitor).

    Example:
        >>> from torchdoctor.lint.rules_data import DataRules
        >>> issubclass(DataRules, LoaderDatasets)
        True
    """

    def _tensor_dataset(self, loader: ast.Call) -> str | None:
        """``"indices"`` for a loader over ``range(n)`` (batches of indices: nothing to load);
        ``"device"`` / ``"host"`` when the loader's dataset is a ``TensorDataset`` of tensors
        already moved to the device (``TensorDataset(X.to(device), y.to(device))``: workers
        cannot touch CUDA tensors and pinning them fails) or of host tensors (batches are one
        gather each: workers would only add pickling), else None."""
        dataset = loader.args[0] if loader.args else next(
            (k.value for k in loader.keywords if k.arg == "dataset"), None)  # fmt: skip
        if isinstance(dataset, ast.Call) and dotted(dataset.func) in ("range", "torch.arange"):
            return "indices"  # (OGB's DataLoader(range(n), batch_size, shuffle=True): nothing
        scope = self.enclosing_scope(loader)  # to load, pin or move but a batch of ints)
        values = [dataset] if isinstance(dataset, ast.Call) else (
            self.assigned_values(scope, dataset.id) if isinstance(dataset, ast.Name) else [])
        if isinstance(dataset, ast.Subscript) and isinstance(dataset.value, ast.Name):
            values = [e for v in self.assigned_values(scope, dataset.value.id)
                      for e in _items(v)]  # (sets["val"] of {k: TensorDataset(...) for k ...})
        if not values and isinstance(dataset, ast.Name):  # (train, val = random_split(data, ...))
            values = split_into(self, scope, dataset.id)
        if not values and isinstance(dataset, ast.Name):  # (a parameter: what callers hand it)
            values = self._handed(scope, dataset.id)
        values = unsplit(self, scope, values)  # (a split holds what its source holds)
        bare = [_bare_tensor(self, v) for v in values]
        if bare and all(bare):  # (DataLoader(torch.randint(...)): a tensor is its own dataset)
            return "device" if "device" in bare else "host"
        moves = [self._moves_items(v) for v in values]
        if moves and all(moves):  # (its __getitem__ copies each item to the GPU itself)
            return "device" if set(moves) == {"memory"} else "device, read per item"
        made = [self._maker(v) if isinstance(v, ast.Call) else None for v in values]
        values = [r.value for v, f in zip(values, made)  # (ds(n) returning a TensorDataset)
                  for r in (ast.walk(f) if f is not None else [ast.Return(value=v)])
                  if isinstance(r, ast.Return) and r.value is not None]  # fmt: skip
        if not values or not all(isinstance(v, ast.Call) and (any(
                n.endswith(".TensorDataset") for n in self.callee(v))
                or (dotted(v.func) or "").split(".")[-1] == "TensorDataset")  # (another file's)
                for v in values):  # fmt: skip
            return None
        parts = [a for v in values for a in v.args]
        parts += [w for a in parts if isinstance(a, ast.Name)  # (named where the set is made)
                  for w in self.assigned_values(self.enclosing_scope(a), a.id)]  # fmt: skip
        moved = any(isinstance(c, ast.Call) and (method_name(c) == "cuda" or (
            method_name(c) == "to" and "device" in self.code_of(c))) for a in parts
            for c in ast.walk(a))  # fmt: skip
        return "device" if moved else "host"

    def _moves_items(self, value: ast.AST) -> str | None:
        """``TabularDataset(..., device=device)``: a Dataset class of the file or the project
        whose ``__getitem__`` copies each item to the device (``.to(self.device)``,
        ``.cuda()``) from memory; workers cannot do that and pinning a device tensor fails.
        ``"memory"`` for one that indexes memory, ``"file"`` for one that also reads a file per
        item (it still wants workers, once its copy moves out); None when it moves nothing."""
        func = value.func if isinstance(value, ast.Call) else None
        name = func.id if isinstance(func, ast.Name) else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and (
                func.value.id in self.names.imports):  # (`data.SpecDataset(...)`: a project module's)
            name = func.attr  # fmt: skip
        project, tree = self.context.project, self.context.tree
        found = [c for c in (tree.body if tree is not None else ())
                 if isinstance(c, ast.ClassDef) and c.name == name and isinstance(func, ast.Name)]  # fmt: skip
        owner = found[0] if found else (
            project.module_class(name) if project is not None and name else None)
        get = next((f for f in getattr(owner, "body", ()) if isinstance(f, ast.FunctionDef)
                    and f.name == "__getitem__"), None)  # fmt: skip
        if get is None or _given_the_cpu(value, owner) or not any(
            isinstance(c, ast.Call) and (method_name(c) == "cuda" or (method_name(c) == "to" and (
                "device" in ast.unparse(c) or "cuda" in ast.unparse(c))))  # (another file's)
            for c in ast.walk(get)
        ) or any(isinstance(r, ast.Return) and r.value is not None and "cpu()" in ast.unparse(
                r.value) for r in ast.walk(get)):  # (computed on the GPU, handed back: host items)
            return None
        reads = any(isinstance(c, ast.Call) and _READS.search(  # (or a Python loop per element)
            (dotted(c.func) or "").rsplit(".", 1)[-1]) or isinstance(c, _PER_ELEMENT)
            for c in ast.walk(get))  # fmt: skip
        return "file" if reads else "memory"

    def _handed(self, scope: ast.AST, name: str) -> list[ast.AST]:
        """What the calls of the function ``scope`` in the file (its call index) hand its
        parameter ``name``, through one assignment in the caller (``ds = Probe(csv, device)``;
        ``probe(model, ds)``); none when a call passes nothing for it."""
        args = getattr(scope, "args", None)
        if args is None or not hasattr(scope, "name"):
            return []
        positional = [a.arg for a in (*args.posonlyargs, *args.args)]
        out: list[ast.AST] = []
        for site in calls_named(self, scope.name):
            if not isinstance(site.func, ast.Name):
                continue  # (a method of the same name elsewhere)
            given = next((k.value for k in site.keywords if k.arg == name), None)
            if given is None and name in positional and positional.index(name) < len(site.args):
                given = site.args[positional.index(name)]
            if given is None:
                return []
            out += self.assigned_values(self.enclosing_scope(site), given.id) if isinstance(
                given, ast.Name) else [given]  # fmt: skip
        return out

    def _maker(self, call: ast.Call) -> ast.FunctionDef | None:
        """The function of the file, or of the project (imported: ``data.make_dataset(n)``),
        that ``call`` runs."""
        found = same_file_callee(call)
        project = self.context.project
        if found is None and project is not None and isinstance(call.func, ast.Name | ast.Attribute):
            name = call.func.id if isinstance(call.func, ast.Name) else call.func.attr
            found = project.module_function(name)
        return found
