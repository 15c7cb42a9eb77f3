"""TD713 a model moved to its device at every training step; TD714 ``retain_graph=True`` on
the only backward of a step.

``model.to(device)`` (or ``model.cuda()``) in the body of a training loop walks every
parameter and buffer at every step, each a ``Tensor.to`` call, for a model that is already
there after the first: move it once before the loop (and build the optimizer after).

``loss.backward(retain_graph=True)`` keeps the step's autograd graph, and every activation it
saved, alive until ``loss`` is bound again in the next iteration: the next forward runs with
the previous step's activations still in memory (about twice the activation memory at peak),
and backward cannot free them as it goes. It is needed only when a second backward goes
through the same graph; with one backward per step, drop it.
"""

from __future__ import annotations

import ast

from torchdoctor.lint.repeat_loops import steps_on_its_batches
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.rules_precision import is_model_like
from torchdoctor.lint.syntax import root_name, target_names
from torchdoctor.lint.visitor import FOR, RuleVisitor, dotted, keyword, method_name

RULES = (
    Rule(
        "TD713",
        "model-moved-every-step",
        "info",
        "model.to(device) / model.cuda() inside the training loop (also a loop over data whose "
        "every item runs a few training steps, for _ in range(k), and a loop whose every "
        "iteration makes a batch and steps on it k times, PPO's rollouts): every parameter and "
        "buffer is walked again at every step",
        "move the model once before the loop (and build the optimizer after it)",
        "for x, y in loader:\n    model.to(device)\n    loss = model(x.to(device)).sum()\n"
        "    loss.backward()\n    opt.step()",
        "model.to(device)\nfor x, y in loader:\n    loss = model(x.to(device)).sum()\n"
        "    loss.backward()\n    opt.step()",
    ),
    Rule(
        "TD714",
        "retain-graph-every-step",
        "warning",
        "loss.backward(retain_graph=True) as the only backward of a training step: the step's "
        "graph and saved activations stay alive into the next step",
        "drop retain_graph=True (it is needed only for a second backward through the same graph)",
        "for x in loader:\n    loss = model(x).sum()\n    loss.backward(retain_graph=True)\n"
        "    opt.step()",
        "for x in loader:\n    loss = model(x).sum()\n    loss.backward()\n    opt.step()",
    ),
)


#: nn.Module methods that return the module itself: ``model.train().cuda()`` moves it
_RETURN_MODULE = frozenset({"train", "eval", "float", "half", "double", "bfloat16",
                            "requires_grad_", "zero_grad"})  # fmt: skip


class StepHabitRules(RuleVisitor):
    """TD713, TD714 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("for x in loader:\\n    model.to(dev)\\n    loss = model(x).sum()\\n"
        ...        "    loss.backward(retain_graph=True)\\n    opt.step()\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(2, 'TD713'), (4, 'TD714')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"\.backward\(|\.step\(", r"retain_graph|\.to\(|\.cuda\("),)



    def _training_loop(self, node: ast.AST) -> ast.AST | None:
        """The innermost loop around ``node``, if it trains; outside loops, the step function
        ``node`` sits in (detectron2's ``run_step``: backward and an optimizer step, called
        every step)."""
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, (*FOR, ast.While))]
        if not loops:
            scope = self.enclosing_scope(node)
            return scope if self.is_step_function(scope) else None
        trains = self.is_training_body(loops[0]) or self._steps_per_item(loops[0])
        return loops[0] if trains else None

    def _steps_per_item(self, loop: ast.AST) -> bool:
        """``for x, y in stream: ...; for _ in range(k): <backward, step>``: a loop over data
        each of whose items runs a few training steps (online adaptation, test-time training,
        MAML's inner loop): its body runs at every step or few; also a loop over a range whose
        every iteration makes a batch and steps on it a few times (PPO's rollouts). Not a loop
        over epochs, whose inner loop walks a loader."""
        if not isinstance(loop, FOR) or any(
                "epoch" in n.lower() for n in target_names(loop.target)):  # fmt: skip
            return False
        body = [s for stmt in loop.body
                for s in (stmt.body if isinstance(stmt, ast.With) else [stmt])]  # fmt: skip
        if _over_range(loop.iter):  # (PPO: each rollout's batch stepped on k times)
            return steps_on_its_batches(loop, self.is_training_body)
        return any(isinstance(s, FOR) and _over_range(s.iter) and self.is_training_body(s)
                   for s in body)  # fmt: skip

    def visit_Call(self, node: ast.Call) -> None:
        name = method_name(node)
        if name in {"to", "cuda"} and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            while isinstance(receiver, ast.Call) and method_name(receiver) in _RETURN_MODULE:
                receiver = receiver.func.value  # type: ignore[attr-defined]  # model.train().cuda()
            statement = self.parent(node)
            loop = self._training_loop(node)
            if (
                (is_model_like(receiver) or self._has_parameters(receiver))
                and isinstance(statement, (ast.Expr, ast.Assign))  # (not `model(x.to(...))`)
                and loop is not None
                and not isinstance(receiver, ast.Call)
                and not self.under_log_gate(node, loop)  # (every N steps)
                and not _made_in(dotted(receiver), loop)  # (a snapshot: not the model trained)
            ):
                self.report(
                    node,
                    "TD713",
                    f"`{self.code_of(node)}` moves the model at every step of this training "
                    "loop: each call walks every parameter and buffer again, for a model "
                    "already there; move it once before the loop",
                )
        elif name == "backward":
            retain = keyword(node, "retain_graph")
            if not (isinstance(retain, ast.Constant) and retain.value is True):
                return
            loop = self._training_loop(node)
            made = self.assigned_in(loop) - set(self.loop_targets(loop)) if loop else set()
            loss = node.func.value  # type: ignore[attr-defined]
            if node.args:  # accelerator.backward(loss, retain_graph=True)
                loss = node.args[0]
            elif isinstance(loss, ast.Call) and loss.args:  # scaler.scale(loss).backward(...)
                loss = loss.args[0]
            names = {root_name(loss)} if not isinstance(loss, ast.BinOp) else {  # (loss / k)
                n.id for n in ast.walk(loss) if isinstance(n, ast.Name)}  # fmt: skip
            if loop is None or not names & made:
                return  # (a loss made before the loop: each iteration goes through it again)
            backwards = [c for c in self.direct_calls(loop.body) if method_name(c) == "backward"
                         and not self._exclusive(c, node, loop)]  # fmt: skip
            if len(backwards) == 1 and not self._differentiates_again(loop):
                self.report(
                    node,
                    "TD714",
                    f"`{self.code_of(node)}` is the step's only backward: retain_graph=True "
                    "keeps its graph and saved activations alive until the next step's loss "
                    "replaces it (about twice the activation memory at peak, and nothing freed "
                    "during backward); drop it",
                )

    def _has_parameters(self, receiver: ast.AST) -> bool:
        """``diffusion`` of ``diffusion.cuda()`` where the function also reads
        ``diffusion.parameters()``: a module, whatever its name."""
        name = dotted(receiver) if isinstance(receiver, ast.Name) else None
        return name is not None and any(
            isinstance(c, ast.Call) and method_name(c) in {"parameters", "named_parameters"}
            and dotted(c.func.value) == name  # type: ignore[attr-defined]
            for c in ast.walk(self.enclosing_scope(receiver))
        )  # fmt: skip

    def _exclusive(self, other: ast.AST, node: ast.AST, loop: ast.AST) -> bool:
        """``other`` and ``node`` sit in the two branches of one ``if`` inside ``loop``
        (``if args.edge_reg: a.backward(retain_graph=True); b.backward() else:
        loss.backward(retain_graph=True)``): they never run in the same iteration."""
        child, parent = node, self.parent(node)
        while parent is not None and parent is not loop:
            if isinstance(parent, ast.If):
                mine = parent.body if any(child is s for s in parent.body) else parent.orelse
                theirs = parent.orelse if mine is parent.body else parent.body
                if any(other is n for s in theirs for n in ast.walk(s)):
                    return True
            child, parent = parent, self.parent(parent)
        return False

    def _differentiates_again(self, loop: ast.AST) -> bool:
        """The loop also differentiates with torch.autograd.grad (a second pass through the
        graph: gradient penalties, meta-learning)."""
        return any(
            self.callee(c) & {"torch.autograd.grad", "torch.autograd.backward"}
            for c in ast.walk(loop)
            if isinstance(c, ast.Call)
        )


def _over_range(it: ast.AST) -> bool:
    """``range(...)`` (through ``tqdm`` / ``enumerate``): a count, not data.

    Example:
        >>> _over_range(ast.parse("tqdm(range(k))").body[0].value)
        True
    """
    while isinstance(it, ast.Call) and dotted(it.func) in {"tqdm", "tqdm.tqdm", "enumerate"} and it.args:
        it = it.args[0]
    return isinstance(it, ast.Call) and dotted(it.func) == "range"


def _made_in(name: str | None, loop: ast.AST) -> bool:
    """``name`` is bound in ``loop`` to a new object, not to itself moved: ``best_model =
    copy.deepcopy(model)`` then ``best_model.to('cpu')`` keeps a snapshot of the best model
    on the host (GFlowNet's proxy training), a fold's ``model = Net()`` is a new model.

    Example:
        >>> loop = ast.parse("for i in r:\\n    best = deepcopy(net)\\n    net = net.to(d)").body[0]
        >>> _made_in("best", loop), _made_in("net", loop)
        (True, False)
    """
    return name is not None and any(
        isinstance(a, ast.Assign) and any(dotted(t) == name for t in a.targets)
        and name not in {dotted(n) for n in ast.walk(a.value)}
        for a in ast.walk(loop)
    )  # fmt: skip
