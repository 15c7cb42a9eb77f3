"""TD605: a model, tokenizer or pipeline loaded inside a loop with the same arguments.

``model = AutoModel.from_pretrained(name)`` or ``clf = pipeline("sentiment-analysis")`` in the
body of a loop over inputs reads the weights from disk, builds the model and initialises it at
every iteration (seconds each, for work that takes milliseconds); so does ``torch.load(path)``
of one checkpoint, ``torch.hub.load``, ``torch.jit.load``, ``timm.create_model``. Load once
before the loop and reuse the object.

Not reported: loads whose arguments change with the loop (``torch.load(p)`` for each
checkpoint path ``p``), loads under a condition in the loop that can change between iterations
(a lazy load: diffusers' IP-Adapter loads its image encoder ``if ... image_encoder is None``; a
branch on a flag the loop never changes, ``if args.ensemble: ... else:``, is taken every time)
and loops that train.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import same_file_callee
from torchdoctor.lint.visitor import FOR, RuleVisitor, dotted, method_name

RULES = (
    Rule(
        "TD605",
        "model-loaded-in-loop",
        "warning",
        "a model, tokenizer or pipeline loaded inside a loop with the same arguments every "
        "iteration (from_pretrained, pipeline(...), torch.load, torch.hub.load, "
        "timm.create_model): weights read from disk and the model built at every iteration",
        "load it once before the loop and reuse it",
        "for text in texts:\n    model = AutoModel.from_pretrained(name)\n    out = model(**tok(text))",
        "model = AutoModel.from_pretrained(name)\nfor text in texts:\n    out = model(**tok(text))",
    ),
)

#: functions that load or build a whole model (qualified names)
_LOADERS = frozenset(
    {
        "torch.load",
        "torch.hub.load",
        "torch.jit.load",
        "timm.create_model",
        "transformers.pipeline",
        "transformers.pipelines.pipeline",
        "sentence_transformers.SentenceTransformer",
        "whisper.load_model",
    }
)
#: methods that load a model, tokenizer or processor by name (Hugging Face, diffusers, PEFT)
_LOAD_METHODS = frozenset({"from_pretrained", "from_single_file"})
_LOAD_TRIGGER = re.compile(
    r"from_pretrained|from_single_file|pipeline\(|torch\.load|hub\.load|jit\.load|"
    r"create_model|load_model|SentenceTransformer"
)


#: the calls of a helper that make it a loader (its own text: it may be another file's)
_LOAD_CALL = re.compile(
    r"^torch\.(hub\.|jit\.)?load$|(^|\.)(from_pretrained|create_model|load_model)$|^pipeline$")


class LoadInLoopRules(RuleVisitor):
    """TD605 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("from transformers import AutoModel\\ndef embed(texts, name):\\n"
        ...        "    for t in texts:\\n        m = AutoModel.from_pretrained(name)\\n"
        ...        "        yield m(t)\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(4, 'TD605')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((_LOAD_TRIGGER.pattern,),)

    def _outer_repeat(self, values: list, loops: list) -> ast.AST | None:
        """The outer loop in whose every iteration the inner loops around the load walk the
        same items (``for video in videos: for ckpt in args.weights: torch.load(ckpt)``): the
        loaded values come only from those items' names and names the outer loop keeps."""
        for k, outer in enumerate(loops[1:], start=1):
            inner = [lp for lp in loops[:k] if isinstance(lp, FOR)]
            if len(inner) != k or not all(self.is_invariant(lp.iter, outer) for lp in inner):
                continue
            walked = set().union(*(_loop_names(lp) for lp in inner))
            if all(isinstance(v, ast.Constant) or self.is_invariant(v, outer) or (
                    {n.id for n in ast.walk(v) if isinstance(n, ast.Name)} <= walked)
                    for v in values):  # fmt: skip
                return outer
        return None

    def _loading_helper(self, node: ast.Call) -> ast.FunctionDef | None:
        """The function of the file (or the project's one of that name) that ``node`` runs,
        when it loads a model and returns something (scVI's ``def build(ckpt): state =
        torch.load(ckpt); ...; return model``): calling it loads the model as much."""
        if not isinstance(node.func, ast.Name):
            return None
        project = self.context.project
        function = same_file_callee(node) or (
            project.module_function(node.func.id) if project is not None else None)
        if function is None:
            return None
        loads = self.context.cache.get(("TD605 loads", id(function)))
        if loads is None:
            called = [dotted(c.func) or "" for c in ast.walk(function) if isinstance(c, ast.Call)]
            loads = any(_LOAD_CALL.search(c) and _what_is_loaded(c) not in ("config", "scheduler")
                        for c in called) and any(  # (a scheduler's config is no model)
                isinstance(r, ast.Return) and r.value is not None for r in ast.walk(function))
            self.context.cache[("TD605 loads", id(function))] = loads
        return function if loads else None

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        if not (names & _LOADERS or method_name(node) in _LOAD_METHODS) and (
                self._loading_helper(node) is None):  # fmt: skip
            return
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, (*FOR, ast.While))]
        if not loops or any(self.is_training_body(lp) for lp in loops):
            return
        loop = loops[0]
        parent = self.parent(node)
        while parent is not None and parent is not loop:
            # a lazy load (`if self.image_encoder is None:`) runs once; a branch on a flag the
            # loop never changes (`if args.ensemble: ... else:`) runs in every iteration
            changing = isinstance(parent, ast.If | ast.IfExp) and not self.is_invariant(
                parent.test, loop)  # fmt: skip
            if isinstance(parent, ast.Try) or changing:
                return
            parent = self.parent(parent)
        values = [*node.args, *(k.value for k in node.keywords)]
        if isinstance(node.func, ast.Attribute) and not names & _LOADERS:
            values.append(node.func.value)  # (the class: AutoModel)
        if any(isinstance(v, ast.Starred) for v in values) or any(
            k.arg is None for k in node.keywords
        ):
            return
        what = _what_is_loaded(self.code_of(node.func))
        if not all(isinstance(v, ast.Constant) or self.is_invariant(v, loop) for v in values):
            outer = self._outer_repeat(values, loops)
            if outer is not None:  # (an ensemble's checkpoints, loaded again for every video)
                self.report(
                    node,
                    "TD605",
                    f"`{self.code_of(node)}` loads the same {what}s in every iteration of the "
                    f"loop at line {outer.lineno}: the loop at line {loop.lineno} walks the "
                    f"same `{self.code_of(loop.iter)}` each time (reading and building each "
                    f"from disk again): load them once before line {outer.lineno} and reuse them",
                )
            return
        self.report(
            node,
            "TD605",
            f"`{self.code_of(node)}` loads the same {what} in every iteration of the loop at "
            f"line {loop.lineno} (reading it from disk and building it each time): load it "
            "once before the loop and reuse it",
        )


def _loop_names(loop: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(getattr(loop, "target", ast.Pass())) if isinstance(n, ast.Name)}


def _what_is_loaded(callee: str) -> str:
    """``tokenizer`` for ``AutoTokenizer.from_pretrained``, ``pipeline``, ``config``, ...

    Example:
        >>> _what_is_loaded("AutoTokenizer.from_pretrained"), _what_is_loaded("torch.load")
        ('tokenizer', 'model')
    """
    for word in ("tokenizer", "processor", "config", "pipeline", "scheduler"):
        if word in callee.lower():
            return word
    return "model"
