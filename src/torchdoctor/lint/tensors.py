"""What looks like a tensor, statically: names, torch functions, predicate methods.

Types are unknowable without running the code; these tables keep the guesses conservative.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.syntax import dotted, method_name, same_file_callee

#: Names that hold a tensor in practically every training loop.
TENSOR_NAME = re.compile(
    r"(^|_)(loss|losses|logits?|acc|accuracy|grad_norm|total_norm|nll|kl|elbo)(_|\d|$)",
    re.IGNORECASE,
)
#: ...unless the name ends like a setting about that value: ``kl_weight``, ``loss_fn``, mixed
#: precision's ``loss_scale`` (a Python float in apex's and Tacotron 2's loss scalers; CLIP's
#: ``logit_scale`` is a parameter: still a tensor)
NOT_TENSOR_SUFFIX = re.compile(
    r"_(weight|weights|coef|coeff|factor|fn|func|type|name|names|mode|cfg|config|key|keys|"
    r"threshold|thresh|steps?|every|freq|interval|eps|beta|alpha|lambda|lam)$|(?<=loss)_scale$",
    re.IGNORECASE,
)
REDUCTIONS = frozenset(
    {
        "sum",
        "mean",
        "max",
        "min",
        "norm",
        "detach",
        "std",
        "var",
        "prod",
        "amax",
        "amin",
        "argmax",
        "argmin",
        "count_nonzero",
        "all",
        "any",
    }
)
#: methods whose result is used as a truth value: `if loss.isnan().any():`
TRUTH_METHODS = frozenset(
    {"any", "all", "isnan", "isinf", "isfinite", "isneginf", "isposinf", "eq", "ne", "gt", "lt",
     "ge", "le", "equal", "allclose", "bool"}
)  # fmt: skip
#: torch functions that (almost always) return tensors: torch.*, torch.linalg.*, F.*, ...
TORCH_TENSOR_FUNCTION = re.compile(
    r"^torch\.(?!is_|are_)((linalg\.|nn\.functional\.|special\.|fft\.)?[a-z_0-9]+"
    r"|nn\.utils\.(clip_grad_norm_|get_total_norm|parameters_to_vector))$"
)
NOT_TENSORS = frozenset(
    {
        "torch.is_tensor",
        "torch.numel",
        "torch.get_default_dtype",
        "torch.is_grad_enabled",
        "torch.is_floating_point",
        "torch.is_complex",
        "torch.typename",
        "torch.device",
        "torch.get_num_threads",
        "torch.is_inference_mode_enabled",
        "torch.initial_seed",
        "torch.seed",
        "torch.compile",
    }
)
MODULE_METHODS = frozenset(
    {
        "parameters",
        "named_parameters",
        "state_dict",
        "modules",
        "named_modules",
        "children",
        "buffers",
        "named_buffers",
        "eval",
        "train",
        "load_state_dict",
        "apply",
    }
)
SCALAR_CASTS = {"builtins.float": "float", "builtins.int": "int", "builtins.bool": "bool"}
TENSOR_FACTORIES = frozenset(
    {"torch.tensor", "torch.as_tensor", "torch.LongTensor", "torch.FloatTensor", "torch.Tensor"}
)


#: step methods a training framework calls every step (PyTorch Lightning, Lightning Fabric
#: recipes, many trainers): the loop, backward and optimizer step live in the framework
FRAMEWORK_STEPS = frozenset({"training_step"})
#: names of which process runs (a rank test is no step interval: ``if rank % 2 == 0``)
RANK_NAME = re.compile(
    r"rank|(^|_)(is_)?(local_|global_)?(main|master|primary|chief)(_process|_rank)?$"
    r"|global_zero|rank_zero|distributed|process_index|ngpus|gpus_per_node|world_size",
    re.IGNORECASE,
)
#: torch functions joining a sequence of tensors (of masks: a mask; of invariants: one)
JOINS = frozenset({"torch.cat", "torch.concat", "torch.concatenate", "torch.stack"})
#: methods a framework calls once per training step (Lightning's hooks, a Hugging Face
#: TrainerCallback's): their body runs every step, as a training loop's does
FRAMEWORK_STEP_HOOKS = FRAMEWORK_STEPS | frozenset(
    {"on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
     "on_before_optimizer_step", "on_before_zero_grad", "on_step_begin", "on_step_end",
     "on_substep_end", "on_optimizer_step", "on_pre_optimizer_step"}
)  # fmt: skip

#: names of dicts of tensors (a training batch), whose ``["key"]`` is a tensor, not a column
TENSOR_DICTS = frozenset({"batch", "inputs", "sample", "features", "model_inputs", "outputs"})
#: reads that give a Python number: comparing them gives a Python bool, not a mask
PYTHON_NUMBERS = frozenset({"shape", "size", "ndim", "dim", "numel", "item", "__len__"})


def python_number(expr: ast.AST) -> bool:
    """``x.shape[0]``, ``x.size(1)``, ``x.ndim``, ``len(x)``, ``x.item()``: a Python number.

    Example:
        >>> python_number(ast.parse("x.shape[0]", mode="eval").body)
        True
        >>> python_number(ast.parse("x.sum()", mode="eval").body)
        False
    """
    if isinstance(expr, ast.Subscript):
        expr = expr.value
    if isinstance(expr, ast.Attribute):
        return expr.attr in PYTHON_NUMBERS
    if isinstance(expr, ast.Call):
        if isinstance(expr.func, ast.Name) and expr.func.id in {"len", "int", "float", "round"}:
            return True
        return method_name(expr) in PYTHON_NUMBERS
    return False


def numbers_in_literal(node: ast.AST) -> int:
    """How many numbers a literal list/tuple of numbers holds (nested, negatives included);
    0 when it holds anything else.

    Example:
        >>> numbers_in_literal(ast.parse("[[1, -2.5], (3, 4)]", mode="eval").body)
        4
        >>> numbers_in_literal(ast.parse("[x, 1]", mode="eval").body)
        0
    """
    if isinstance(node, (ast.List, ast.Tuple)):
        counts = [numbers_in_literal(e) for e in node.elts]
        return sum(counts) if counts and all(counts) else 0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return 1
    return 0


def runs_a_training_step(call: ast.Call) -> bool:
    """``agent.learn(batch)``, ``learner.train_step(b)``, ``agent.update(batch)``,
    ``ppo_trainer.step(...)``: a method named for a whole update (backward and optimizer step
    inside), of an agent, learner or trainer.

    Example:
        >>> [runs_a_training_step(ast.parse(c).body[0].value) for c in
        ...  ("agent.learn(b)", "trainer.step(q, r)", "env.step(a)", "pbar.update(1)")]
        [True, True, False, False]
    """
    name = method_name(call)
    receiver = (dotted(call.func.value) or "").rsplit(".", 1)[-1].lower() if name else ""  # type: ignore[attr-defined]
    return name in _UPDATE_METHODS or (name == "update" and bool(_LEARNER.search(receiver))) or (
        name == "step" and bool(_TRAINER.search(receiver)))  # (TRL's ppo_trainer.step(q, r))


_UPDATE_METHODS = frozenset({"learn", "train_step", "learn_step", "optimize_model",
                             "update_parameters", "train_on_batch"})  # fmt: skip
_LEARNER = re.compile(r"agent|learner|algo|trainer|policy")
_TRAINER = re.compile(r"trainer|learner")


def framework_step_method(cls: ast.ClassDef, method: ast.AST) -> bool:
    """``method`` of ``cls`` is one a framework runs every training step: Lightning's
    ``training_step``, a Hugging Face ``Trainer`` subclass's ``compute_loss``.

    Example:
        >>> cls = ast.parse("class T(Trainer):\\n    def compute_loss(self, m, x):\\n        pass").body[0]
        >>> framework_step_method(cls, cls.body[0])
        True
    """
    name = getattr(method, "name", "")
    return name in FRAMEWORK_STEPS or (
        name == "compute_loss" and any((dotted(b) or "").endswith("Trainer") for b in cls.bases))


def steps_by_hand(body: ast.AST | list) -> ast.For | None:
    """The hand-written optimizer step among ``body``'s statements (a statement, or a list;
    also inside ``with`` blocks): ``for p in model.parameters(): p.add_(p.grad, alpha=-lr)``, a
    loop over parameters updating them in place from their gradients (a gradient zeroed in
    place, ``p.grad.zero_()``, is no step), or down an update computed elsewhere (``p.add_(upd,
    alpha=-lr)``, ``p -= lr * g``: DP-SGD's noisy step from clipped per-example gradients); None.

    Example:
        >>> src = "with torch.no_grad():\\n    for p in net.parameters():\\n        p -= lr * p.grad"
        >>> steps_by_hand(ast.parse(src).body).lineno
        2
    """
    stack = list(body) if isinstance(body, list) else [body]
    while stack:
        stmt = stack.pop(0)
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            stack[:0] = stmt.body
        elif isinstance(stmt, ast.For) and any(
                method_name(c) in ("parameters", "named_parameters")
                for c in ast.walk(stmt.iter) if isinstance(c, ast.Call)) and (any(
                any(isinstance(a, ast.Attribute) and a.attr == "grad" for a in ast.walk(v))
                for n in ast.walk(stmt) for v in _update_sources(n)) or _descends(stmt)):  # fmt: skip
            return stmt
    return None


def _descends(loop: ast.For) -> bool:
    """``loop`` (over parameters) moves its parameter against an update: ``p.sub_(...)``,
    ``p -= ...``, ``p.add_(u, alpha=-lr)`` / ``p.data.add_(-lr * u)`` (an EMA's ``add_`` of a
    positive weight is no descent).

    Example:
        >>> _descends(ast.parse("for p in m.parameters():\\n    p.add_(buf, alpha=-lr)").body[0])
        True
        >>> _descends(ast.parse("for e, p in zip(a, b):\\n    e.add_(p, alpha=1 - d)").body[0])
        False
    """
    var = dotted(loop.target)
    mine = {var, f"{var}.data"} if var else set()
    for n in ast.walk(loop):
        if isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Sub) and dotted(n.target) in mine:
            return True
        if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and dotted(n.func.value) in mine):
            continue
        negative = [*n.args, *(k.value for k in n.keywords if k.arg == "alpha")]
        if n.func.attr == "sub_" or n.func.attr == "add_" and any(
                isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.USub) for v in negative):
            return True  # fmt: skip
    return False


def project_callee(call: ast.Call, context) -> ast.FunctionDef | None:
    """The function ``call`` runs: one of this file (:func:`same_file_callee`), or the project's
    one module-level definition of a name the file imports (``noisy_step(model, g)`` with
    ``from privacy import noisy_step``); None.

    Example:
        >>> project_callee(ast.parse("f(x)").body[0].value, None) is None
        True
    """
    function = same_file_callee(call)
    names = getattr(context, "names", None)
    project = getattr(context, "project", None)
    if function is not None or project is None or names is None or not isinstance(call.func, ast.Name):
        return function
    return project.module_function(call.func.id) if call.func.id in names.imports else None


def step_callee(call: ast.Call, rules) -> ast.FunctionDef | None:
    """What a loop's ``call`` runs, for the question whether it trains: a function of the file
    or the project (:func:`project_callee`), or a method of an object the script made
    (:func:`instance_method`)."""
    return project_callee(call, rules.context) or instance_method(call, rules)


def instance_method(call: ast.Call, rules) -> ast.FunctionDef | None:
    """The method ``obj.name(...)`` runs when ``obj`` is assigned, in the call's function or at
    the module's top level, an instance of a class of this file or the project's one class of
    that name (``agent = TD3(...)`` or ``policy = TD3.TD3(...)``, then ``agent.train(replay)``
    in the loop: an RL script's update one call away); None.

    Example:
        >>> instance_method(ast.parse("agent.train(b)").body[0].value, None) is None
        True
    """
    func = call.func
    if rules is None or not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
        return None
    scope, tree = rules.enclosing_scope(call), rules.context.tree
    values = [*rules.assigned_values(scope, func.value.id), *(
        rules.assigned_values(tree, func.value.id) if tree is not None and tree is not scope else [])]
    project = getattr(rules.context, "project", None)
    for value in values:
        while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and isinstance(
                value.func.value, ast.Call):  # (Agent(...).to(device): the class's instance)
            value = value.func.value
        made = value.func if isinstance(value, ast.Call) else None
        name = made.id if isinstance(made, ast.Name) else getattr(made, "attr", "")
        if not name[:1].isupper():
            continue
        cls = next((n for n in getattr(tree, "body", ()) if isinstance(n, ast.ClassDef) and n.name == name), None)
        if cls is None and project is not None:
            cls = project.module_class(name)
        method = next((f for f in getattr(cls, "body", ()) if isinstance(f, ast.FunctionDef) and f.name == func.attr), None)
        if method is not None:
            return method
    return None


def _update_sources(node: ast.AST) -> list[ast.AST]:
    """What an in-place update ``node`` writes from: the arguments of ``p.add_(...)``, the
    value of ``p -= ...``; nothing for other nodes."""
    if isinstance(node, ast.AugAssign):
        return [node.value]
    if isinstance(node, ast.Call) and (method_name(node) or "").endswith("_"):
        return [*node.args, *(k.value for k in node.keywords)]
    return []
