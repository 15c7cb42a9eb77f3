"""TD711: a checkpoint written on every training step.

``torch.save(model.state_dict(), path)`` (also ``model.save_pretrained(dir)``,
``accelerator.save(...)`` / ``save_state(...)`` (any name this file binds to
``Accelerator(...)``), ``trainer.save_checkpoint(...)``, Lightning
Fabric's ``fabric.save(...)``, the ``save_on_master(...)`` helper of the DeiT/DETR/DINO family)
at the top level of a training loop's body serializes the whole state to disk every step: the
step stalls for the write, and on CUDA every tensor is first copied to the host (a sync). Save
every N steps, at the end, or when the validation metric improves.

The training loop is found as the TD2xx/TD7xx rules find it: the innermost ``for`` / ``while``
around the save whose body calls ``.backward()`` or an optimizer's ``.step()`` directly (a
Lightning ``training_step`` method counts as one step). Not reported:

- a save under any ``if`` or conditional expression inside the loop (``if step % N == 0``,
  ``if loss < best``, ``if epoch == last``), or after an ``if ...: continue`` that skips it
  (not one before the optimizer step: ``if (i + 1) % accum: continue`` skips micro-batches,
  and the save after the step runs at every update), unless that ``if`` also holds the
  backward and optimizer step beside the save (an RL loop's
  ``if step % train_every == 0:`` around the whole update: the save runs at every update);
  except an ``if`` that only tests the process rank (``if rank == 0:``,
  ``if accelerator.is_main_process:``, ``save_on_master``): that one process still writes every
  step, and with DistributedDataParallel the other ranks wait for it at the next all-reduce;
- an epoch loop: a loop whose body holds an inner loop over the batches (a loop that trains or
  iterates a loader), saving once per epoch (an inner gradient-accumulation loop over
  micro-batches, ``for micro in range(accum)``, does not make the outer loop an epoch loop);
- a project's own ``save_checkpoint(...)`` that this file does not define unconditionally
  saving (it may decide when to write itself).
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.repeat_loops import repeats_outer_batch, steps_on_its_batches
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import every_step_of, target_names
from torchdoctor.lint.tensors import FRAMEWORK_STEPS, RANK_NAME
from torchdoctor.lint.visitor import (
    FOR,
    FUNCTIONS,
    RuleVisitor,
    dotted,
    dotted_names_in,
    method_name,
)

RULES = (
    Rule(
        "TD711",
        "checkpoint-every-step",
        "warning",
        "a checkpoint (torch.save, save_pretrained, accelerator.save_state, "
        "trainer.save_checkpoint) written on every training step (also once a PPO rollout, "
        "whose batch is stepped on k times): serializing the whole state_dict to disk stalls "
        "every step (on CUDA, every tensor is copied to the host)",
        "save every N steps (`if step % N == 0:`), at the end of training, or when the "
        "validation metric improves",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()\n"
        "    torch.save(model.state_dict(), 'ckpt.pt')",
        "for i, b in enumerate(loader):\n    model(b).sum().backward()\n    opt.step()\n"
        "    if i % 1000 == 0:\n        torch.save(model.state_dict(), 'ckpt.pt')",
    ),
)

_LOOPS = (*FOR, ast.While)
_TORCH_SAVE = frozenset({"torch.save", "torch.serialization.save"})
#: receivers whose .save(...) / .save_state(...) / .save_model(...) write a checkpoint
_FRAMEWORK = re.compile(r"(^|_)(accelerator|fabric)$", re.IGNORECASE)
#: receivers whose .save_checkpoint(...) is a framework's (Lightning, DeepSpeed)
#: classes whose objects' .save(...) / .save_state(...) write a checkpoint, whatever the
#: variable holding one is named
_FRAMEWORK_CLASSES = frozenset({"Accelerator", "Fabric"})
_CHECKPOINTER = re.compile(r"(trainer|engine|fabric|accelerator)$", re.IGNORECASE)
_LOADER = re.compile(r"loader|batches|dataset", re.IGNORECASE)
_EVALUATION = re.compile(r"val|dev|test|eval", re.IGNORECASE)
_ACCUMULATION = re.compile(r"accum|micro", re.IGNORECASE)


class CheckpointRules(RuleVisitor):
    """TD711 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef train(model, loader, opt):\\n    for x in loader:\\n"
        ...        "        model(x).sum().backward()\\n        opt.step()\\n"
        ...        "        torch.save(model.state_dict(), 'last.pt')\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(6, 'TD711')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (
        (r"save\w*\(", r"backward\(|\.step\("),
        (r"save\w*\(", r"def training_step\("),
    )

    def visit_Call(self, node: ast.Call) -> None:
        if not self._saves(node):
            return
        context = self._step_context(node)
        if context is None or self._gated(node, context):
            return
        self.report(
            node,
            "TD711",
            f"`{self.code_of(node)}` runs {every_step_of(context)}: serializing the whole "
            "state to disk every step stalls training (and on CUDA copies every tensor to the "
            "host first); save every N steps (`if step % N == 0:`), at the end, or when the "
            "validation metric improves",
        )

    # -- what saves ----------------------------------------------------------------------------
    def _saves(self, call: ast.Call) -> bool:
        names = self.callee(call)
        if names & _TORCH_SAVE:
            return True
        name = method_name(call)
        func = call.func
        if name is None:
            bare = func.id if isinstance(func, ast.Name) else None
            if bare == "save_on_master":
                return True
            # (a helper of this file named for saving: save_checkpoint, textual inversion's
            # save_progress, that calls torch.save unconditionally)
            return bare is not None and "save" in bare.lower() and self._saves_unconditionally(
                bare, None)  # fmt: skip
        if names:  # a module's function: utils.save_on_master(...), np.save(...)
            return name == "save_on_master"
        receiver = dotted(func.value) or ""  # type: ignore[attr-defined]
        last = receiver.rsplit(".", 1)[-1]
        if name == "save_pretrained":
            return True
        if name in {"save", "save_state", "save_model"}:
            return bool(_FRAMEWORK.search(last)) or self._framework_object(receiver)
        if name == "save_on_master":
            return True
        if name == "save_checkpoint":
            if _CHECKPOINTER.search(last):
                return True
            if receiver == "self":
                return self._saves_unconditionally(name, call)
        return False

    def _framework_object(self, receiver: str) -> bool:
        """``receiver`` is a name this file binds to ``Accelerator(...)`` or ``Fabric(...)``
        (``acc = Accelerator(mixed_precision="fp16")``), whatever it is called."""
        tree = self.context.tree
        if tree is None or not receiver.isidentifier():
            return False
        return any(
            isinstance(value, ast.Call)
            and any(q.rsplit(".", 1)[-1] in _FRAMEWORK_CLASSES for q in self.callee(value))
            for value in self.assigned_values(tree, receiver)
        )

    def _saves_unconditionally(self, name: str, at: ast.Call | None) -> bool:
        """``def save_checkpoint(...)`` in this file (a method of the class around ``at``, or
        a module-level function) calls torch.save outside any ``if`` and has no ``return``
        before it."""
        tree = self.context.tree
        if tree is None:
            return False
        owner: ast.AST = tree
        if at is not None:
            owner = self.enclosing_scope(at)
            while not isinstance(owner, (ast.ClassDef, ast.Module)):
                owner = self.enclosing_scope(owner)
        for stmt in owner.body:  # type: ignore[attr-defined]
            if isinstance(stmt, FUNCTIONS) and stmt.name == name:
                return self._unconditional_save(stmt)
        return False

    def _unconditional_save(self, function: ast.AST) -> bool:
        """A top-level statement of ``function`` calls torch.save, and no ``if`` before it
        returns or saves (a save it decides on itself)."""
        for stmt in function.body:  # type: ignore[attr-defined]
            saves = any(
                isinstance(c, ast.Call) and self.callee(c) & _TORCH_SAVE for c in ast.walk(stmt)
            )
            if isinstance(stmt, (ast.If, ast.Try, ast.Return, *_LOOPS)):
                if saves or any(isinstance(n, ast.Return) for n in ast.walk(stmt)):
                    return False
            elif saves:
                return True
        return False

    # -- where it runs -------------------------------------------------------------------------
    def _step_context(self, node: ast.Call) -> ast.AST | None:
        """The innermost training loop around ``node`` when it is a per-step loop (not an
        epoch loop), or a ``training_step`` method; None otherwise."""
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, _LOOPS)]
        if not loops:
            scope = self.enclosing_scope(node)
            if isinstance(scope, FUNCTIONS) and scope.name in FRAMEWORK_STEPS:
                return scope
            return None
        loop = next((lp for lp in loops if self.is_training_body(lp)
                     or steps_on_its_batches(lp, self.is_training_body)), None)  # fmt: skip
        if loop is None or self._epoch_loop(loop):
            return None
        return loop

    def _epoch_loop(self, loop: ast.AST) -> bool:
        """``loop`` holds an inner loop over batches (one that trains, or iterates a loader
        that is not a validation set) that is not a gradient-accumulation loop over
        micro-batches, unless the loop itself steps an optimizer too (a GAN's generator step
        after its inner critic loop: still one checkpoint a step)."""
        if self.training_calls(loop) >= {"backward", "step"}:
            return False
        stack = list(loop.body)  # type: ignore[attr-defined]
        while stack:
            node = stack.pop()
            if isinstance(node, (*FUNCTIONS, ast.ClassDef, ast.Lambda)):
                continue
            if isinstance(node, _LOOPS):
                header = node.iter if isinstance(node, FOR) else node.test
                names = [*dotted_names_in(header)]
                if isinstance(node, FOR):
                    names += dotted_names_in(node.target)
                if any(_ACCUMULATION.search(n) for n in names):
                    pass
                elif self._split_of_this_step(node, loop):
                    pass  # (DP-SGD: the physical batches of the loop's one logical batch)
                elif repeats_outer_batch(node, loop) and not any(
                        "epoch" in n.lower() for n in dotted_names_in(getattr(loop, "target", loop))):  # fmt: skip
                    continue  # (PPO: each rollout's batch stepped on k times, minibatch loops
                    # in it too: a step loop still)
                elif self._trains_within(node) or (
                    any(_LOADER.search(n) for n in names)
                    and not any(_EVALUATION.search(n) for n in names)
                ):
                    return True
            stack.extend(ast.iter_child_nodes(node))
        return False

    def _split_of_this_step(self, inner: ast.AST, loop: ast.AST) -> bool:
        """``inner`` iterates a loader that ``loop`` builds from its own item (``loader =
        DataLoader(Subset(train, shard))``, ``shard = idx[rank::world]``, ``idx`` the loop's):
        the micro-batches of one step, not an epoch of batches."""
        if not (isinstance(inner, FOR) and isinstance(inner.iter, ast.Name)):
            return False
        derived = set(self.loop_targets(loop))
        for stmt in loop.body:  # type: ignore[attr-defined]
            if isinstance(stmt, ast.Assign) and derived & set(dotted_names_in(stmt.value)):
                derived |= {t for target in stmt.targets for t in target_names(target)}
        return inner.iter.id in derived - self.loop_targets(loop)

    def _trains_within(self, loop: ast.AST) -> bool:
        return any(isinstance(n, _LOOPS) and self.is_training_body(n) for n in ast.walk(loop))

    def _gated(self, node: ast.AST, context: ast.AST) -> bool:
        """Under an ``if`` that tests more than the rank, or after an ``if ...: continue``
        (``return`` in a ``training_step``) inside ``context``."""
        child, parent = node, self.parent(node)
        while parent is not None:
            block = _block_of(parent, child)
            if block is not None and self._skipped_before(block, child, context):
                return True
            if parent is context:
                return False
            if isinstance(parent, ast.IfExp) and child is not parent.test:
                return True
            if isinstance(parent, ast.If) and child is not parent.test and not (
                any(s is child for s in parent.body) and self._steps_in(parent.body)
            ):  # (`if step % train_every == 0:` around backward, step and the save: an update)
                if any(s is child for s in parent.orelse) or not self._rank_test(parent.test):
                    return True
            if isinstance(parent, getattr(ast, "Match", ())):
                return True
            child, parent = parent, self.parent(parent)
        return False

    def _steps_in(self, block: list[ast.stmt]) -> bool:
        """``block`` runs backward and an optimizer step itself: an ``if`` around it decides
        when the model is updated, and a save beside them runs at every update."""
        return self.training_calls(block) >= {"backward", "step"}

    def _skipped_before(self, block: list[ast.stmt], child: ast.AST, context: ast.AST) -> bool:
        """A statement before ``child`` in ``block`` is ``if <not rank test>: ... continue``
        (or ``return``, in a ``training_step``)."""
        skips = (ast.Continue,) if isinstance(context, _LOOPS) else (ast.Return,)
        for at, stmt in enumerate(block):
            if stmt is child:
                return False
            if isinstance(stmt, ast.If) and not self._rank_test(stmt.test):
                if any(isinstance(s, skips) for s in _walk_branch(stmt)) and not any(
                        "step" in self.training_calls(s) for s in block[at + 1:]):  # fmt: skip
                    return True  # (an optimizer step after it: `if (i + 1) % accum: continue`
        return False  # skips micro-batches, and what follows runs at every update)

    def _rank_test(self, test: ast.AST) -> bool:
        """``rank == 0``, ``args.local_rank in [-1, 0]``, ``accelerator.is_main_process``,
        ``is_main_process()``, ``dist.get_rank() == 0``, and ``and`` / ``or`` / ``not`` of
        those: a test of which process runs, not of when; and Accelerate's
        ``accelerator.sync_gradients``, true at every optimizer step."""
        if (dotted(test) or "").endswith("sync_gradients"):
            return True
        if isinstance(test, ast.BoolOp):
            return all(self._rank_test(v) for v in test.values)
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return self._rank_test(test.operand)
        if isinstance(test, ast.Compare):
            return _rank_expr(test.left) and all(
                _rank_expr(c) or _small_constants(c) for c in test.comparators
            )
        return _rank_expr(test)


def _rank_expr(expr: ast.AST) -> bool:
    """``rank``, ``args.local_rank``, ``is_main_process()``, ``dist.get_rank()``,
    ``args.rank % ngpus_per_node``: every name in it is about the process."""
    if isinstance(expr, ast.Call) and (expr.args or expr.keywords):
        return False
    if isinstance(expr, ast.BinOp) and not isinstance(expr.op, ast.Mod):
        return False
    names = [n.rsplit(".", 1)[-1] for n in dotted_names_in(expr)]
    return bool(names) and all(RANK_NAME.search(n) for n in names)


def _small_constants(expr: ast.AST) -> bool:
    """``0``, ``-1``, ``[-1, 0]``, ``(0,)``."""
    if isinstance(expr, (ast.List, ast.Tuple, ast.Set)):
        return all(_small_constants(e) for e in expr.elts)
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        expr = expr.operand
    return isinstance(expr, ast.Constant) and isinstance(expr.value, int)


def _block_of(parent: ast.AST, child: ast.AST) -> list[ast.stmt] | None:
    """The statement list of ``parent`` that holds ``child``."""
    for field in ("body", "orelse", "finalbody"):
        block = getattr(parent, field, None)
        if isinstance(block, list) and any(s is child for s in block):
            return block
    return None


def _walk_branch(stmt: ast.If):
    """Nodes of an ``if``'s branches, not entering loops or definitions (a ``continue`` there
    belongs to them)."""
    stack: list[ast.AST] = [*stmt.body, *stmt.orelse]
    while stack:
        node = stack.pop()
        if isinstance(node, (*_LOOPS, *FUNCTIONS, ast.ClassDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))
