"""The shapes of a denoising (reverse-diffusion) loop, read from source: what it iterates
over, which way it counts, what its timestep variable is called (TD601, TD603; the mask
writes TD603 reports: ``mask_writes.py``)."""

from __future__ import annotations

import ast
import re
from typing import Any

from torchdoctor.lint.syntax import FOR, same_file_callee, target_names
from torchdoctor.lint.visitor import MODEL_NAME, dotted, dotted_names_in, method_name

STEP_COUNT = re.compile(r"inference_steps|sampling_steps|denois|diffusion_steps", re.IGNORECASE)
_WRAPPERS = frozenset({"enumerate", "tqdm", "reversed", "list", "iter", "progress_bar", "track"})
#: functions that reverse a sequence of timesteps (a sampler walks them backwards)
_FLIPS = frozenset({"np.flip", "numpy.flip", "torch.flip", "np.flipud", "numpy.flipud"})


def unwrap_iter(it: ast.AST) -> ast.AST:
    """The iterable inside enumerate(...)/tqdm(...)/reversed(...)/list(...)/iter(...), a
    progress bar (diffusers' ``self.progress_bar(timesteps)``, rich's ``track``) or a slice
    (``scheduler.timesteps[t_start:]``, img2img).

    Example:
        >>> ast.unparse(unwrap_iter(ast.parse("enumerate(tqdm(sched.timesteps[2:]))").body[0].value))
        'sched.timesteps'
    """
    while True:
        if (
            isinstance(it, ast.Call)
            and isinstance(it.func, (ast.Name, ast.Attribute))
            and (dotted(it.func) or "").rsplit(".", 1)[-1] in _WRAPPERS
            and (it.args or it.keywords)
        ):
            it = it.args[0] if it.args else it.keywords[0].value
        elif isinstance(it, ast.Call) and dotted(it.func) in _FLIPS and it.args:
            it = it.args[0]  # (LDM's DDIM: np.flip(self.ddim_timesteps))
        elif isinstance(it, ast.Subscript) and (
            isinstance(it.slice, ast.Slice)
            or (
                isinstance(it.slice, ast.Tuple)
                and all(isinstance(e, ast.Slice) for e in it.slice.elts)
            )
        ):
            it = it.value
        else:
            return it


def range_call(it: ast.AST) -> ast.Call | None:
    """The ``range(...)`` call a loop iterates over (through the wrappers), if any.

    Example:
        >>> ast.unparse(range_call(ast.parse("reversed(range(n))").body[0].value))
        'range(n)'
    """
    it = unwrap_iter(it)
    if isinstance(it, ast.Call) and (dotted(it.func) or "").rsplit(".", 1)[-1] == "range":
        return it
    return None


def counts_down(it: ast.AST) -> bool:
    """A range walked backwards: ``reversed(range(n))`` (through enumerate/tqdm) or
    ``range(n - 1, -1, -1)``, as a reverse-diffusion loop walks its timesteps.

    Example:
        >>> [counts_down(ast.parse(c).body[0].value) for c in ("range(n - 1, -1, -1)", "range(n)")]
        [True, False]
    """
    steps = range_call(it)
    if steps is None:
        return False
    if len(steps.args) == 3 and ast.unparse(steps.args[2]).replace(" ", "").startswith("-"):
        return True
    while isinstance(it, ast.Call) and it is not steps and (it.args or it.keywords):
        if (dotted(it.func) or "").rsplit(".", 1)[-1] == "reversed":
            return True
        it = it.args[0] if it.args else it.keywords[0].value
    return False


def is_denoising_iter(it: ast.AST) -> bool:
    """``scheduler.timesteps``, ``range(num_inference_steps)``, also wrapped in
    enumerate/tqdm/reversed/list.

    Example:
        >>> [is_denoising_iter(ast.parse(c).body[0].value)
        ...  for c in ("tqdm(scheduler.timesteps)", "range(num_inference_steps)", "range(n)")]
        [True, True, False]
    """
    steps = range_call(it)
    if steps is not None:
        return any(STEP_COUNT.search(ast.unparse(a)) for a in steps.args)
    last = (dotted(unwrap_iter(it)) or "").rsplit(".", 1)[-1]
    return last == "timesteps" or last.endswith("_timesteps")  # (self.ddim_timesteps)


#: functions named like an evaluation or a sampler (TD602) ...
EVAL_FUNCTION = re.compile(
    r"(^|_)(eval|evaluate|evaluation|infer|inference|sample|sampling|sampler|predict|prediction|"
    r"validate|validation|generate|generation|denoise|denoising|"
    r"mrr|hits|accuracy|metric|metrics)(_|$)",  # (a metric over a model's outputs: per_relation_mrr)
    re.IGNORECASE,
)
#: ... unless its name says it computes something trained (``per_sample_loss``,
#: ``train_sampler``, ``sample_grads``: "sample" there is a noun, the work is training's)
_TRAINING_NAME = re.compile(
    r"(^|_)(loss|losses|train|training|grad|grads|gradient|gradients|backward)(_|$)|per_sample",
    re.IGNORECASE,
)


def eval_named(name: str) -> bool:
    """A function named like an evaluation or a sampler, not like training work.

    Example:
        >>> eval_named("evaluate"), eval_named("sample_images"), eval_named("per_sample_loss")
        (True, True, False)
    """
    return bool(EVAL_FUNCTION.search(name)) and not _TRAINING_NAME.search(name)


#: functions whose loops are sampling loops: sample(), generate(), denoise(), ddim_sample() ...
SAMPLING_FUNCTION = re.compile(
    r"(^|_)(sample|sampling|sampler|generate|generation|denoise|denoising|diffuse|diffusion|"
    r"reverse|rollout|infer|inference|predict|plan)(_|\d|$)",
    re.IGNORECASE,
)
#: loop variables that name a diffusion timestep
TIMESTEP_TARGET = re.compile(r"^(t|ts|tt|t_idx|timestep|time_step|tau|sigma)$", re.IGNORECASE)


def invariant_inner_calls(
    rules: object, call: ast.Call, loop: ast.AST, encoder_call: re.Pattern[str]
) -> list[ast.Call]:
    """The module calls inside a function of this file that ``call`` (made in a denoising
    ``loop``) runs, whose arguments are only parameters the loop passes unchanged: the
    encoder a step helper re-runs (``def denoise_step(self, x, t, obs): cond =
    self.encoder(obs)``, called as ``self.denoise_step(x, t, obs)``). ``rules`` is the
    :class:`~torchdoctor.lint.visitor.RuleVisitor` asking; ``encoder_call`` names calls that
    encode (``encod|embed|cond|proj``).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("class P:\\n    def step(self, x, t, obs):\\n        c = self.encoder(obs)\\n"
        ...        "        return self.unet(x, t, c)\\n    def sample(self, x, obs):\\n"
        ...        "        for t in self.scheduler.timesteps:\\n            x = self.step(x, t, obs)\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(3, 'TD601')]
    """
    function = same_file_callee(call)
    if function is None or any(isinstance(a, ast.Starred) for a in call.args):
        return []
    params = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
    if not isinstance(call.func, ast.Name):
        params = params[1:]  # (self)
    passed = dict(zip(params, call.args))
    passed.update((k.arg, k.value) for k in call.keywords if k.arg in params)
    fixed = {
        name
        for name, arg in passed.items()
        if isinstance(arg, ast.Constant) or rules.is_invariant(arg, loop)  # type: ignore[attr-defined]
    }
    fixed -= {
        n
        for node in ast.walk(function)
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        for n in target_names(t)
    }
    found = []
    for inner in rules.direct_calls(function.body):  # type: ignore[attr-defined]
        last = (dotted(inner.func) or "").rsplit(".", 1)[-1]
        if not last or not (MODEL_NAME.search(last) or encoder_call.search(last)):
            continue
        values = [*inner.args, *(k.value for k in inner.keywords)]
        names = [v for v in values if isinstance(v, ast.Name)]
        if names and all(
            isinstance(v, ast.Constant) or (isinstance(v, ast.Name) and v.id in fixed)
            for v in values
        ):
            found.append(inner)
    return found


#: torch.cat and its aliases
_CAT = frozenset({"torch.cat", "torch.concat", "torch.concatenate"})
#: taking a stored tensor out of a container: `h.pop()` (a skip connection), not a new token
_CONTAINER_TAKES = frozenset({"pop", "popleft", "get", "__getitem__"})


def _reordered(first: ast.AST, name: str) -> bool:
    """``first`` is ``name`` itself, or its rows reordered (a beam search keeps the beams it
    extends: ``seqs[prev]``, ``seqs.index_select(0, prev)``), not a slice of it (a window).

    Example:
        >>> [_reordered(ast.parse(e).body[0].value, "seqs")
        ...  for e in ("seqs", "seqs[prev]", "seqs.index_select(0, prev)", "seqs[:, -8:]")]
        [True, True, True, False]
    """
    if isinstance(first, ast.Name):
        return first.id == name
    if isinstance(first, ast.Subscript) and isinstance(first.value, ast.Name):
        return first.value.id == name and not any(
            isinstance(n, ast.Slice) for n in ast.walk(first.slice)
        )
    return (
        isinstance(first, ast.Call)
        and method_name(first) == "index_select"
        and isinstance(first.func.value, ast.Name)  # type: ignore[attr-defined]
        and first.func.value.id == name  # type: ignore[attr-defined]
    )


def _body_assigns(body: list[ast.stmt]) -> list[ast.Assign]:
    """The one-target assignments of a loop's body, those inside its ``with`` and ``if``
    blocks too (mamba-minimal's ``with torch.no_grad(): indices_to_input = input_ids``), not
    those of nested loops or functions.

    Example:
        >>> body = ast.parse("with g():\\n    a = b\\nif c:\\n    d = e\\nfor f in h:\\n    i = j").body
        >>> [ast.unparse(s) for s in _body_assigns(body)]
        ['a = b', 'd = e']
    """
    out: list[ast.Assign] = []
    for stmt in body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            out.append(stmt)
        elif isinstance(stmt, ast.With | ast.AsyncWith | ast.If):
            out += _body_assigns(stmt.body) + _body_assigns(getattr(stmt, "orelse", []))
    return out


def grown_names(rules: Any, loop: ast.For | ast.While) -> set[str]:
    """Names ``loop`` grows by concatenating to themselves (``x = torch.cat((x, y), 1)``, what
    is appended computed in the loop), and the names derived from them in the loop (``x_cond =
    x[:, -block:]``). ``rules`` is the :class:`~torchdoctor.lint.visitor.RuleVisitor` asking.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef extend(net, ids):\\n    while True:\\n"
        ...        "        ctx = ids if ids.size(1) <= 8 else ids[:, -8:]\\n"
        ...        "        nxt = net(ctx).argmax(-1)\\n"
        ...        "        ids = torch.cat([ids, nxt], 1)\\n")
        >>> [(f.code, f.line) for f in lint_source(src)]  # (ctx is derived from ids)
        [('TD604', 5)]
    """
    grown: set[str] = set()
    assigns = _body_assigns(loop.body)
    for stmt in assigns:
        target, value = stmt.targets[0], stmt.value
        if not (isinstance(target, ast.Name) and isinstance(value, ast.Call)):
            continue
        if not rules.callee(value) & _CAT or not value.args:
            continue
        parts = value.args[0]
        if isinstance(parts, (ast.List, ast.Tuple)) and len(parts.elts) > 1:
            first = parts.elts[0]
            # what is appended is computed in the loop (the next token from the logits),
            # not taken from elsewhere (a U-Net's skip connection, `h.pop()`)
            added = {n for e in parts.elts[1:] for n in dotted_names_in(e)}
            made_here = rules.assigned_in(loop) - {target.id}
            computed = any(
                isinstance(c, ast.Call) and method_name(c) not in _CONTAINER_TAKES
                for e in parts.elts[1:]
                for c in ast.walk(e)
            )
            if _reordered(first, target.id) and (added & made_here or computed):
                grown.add(target.id)
    derived = set(grown)
    for _ in range(2):  # (a name derived from a derived one)
        for stmt in assigns:
            target = stmt.targets[0]
            if isinstance(target, ast.Name) and target.id not in grown:
                if derived & set(dotted_names_in(stmt.value)):
                    derived.add(target.id)
    return derived if grown else set()


def grows_a_sequence(rules: Any, loop: ast.For | ast.While) -> str | None:
    """The name an autoregressive decoding ``loop`` grows by one token per iteration and feeds
    back to a call in its body: grown with ``torch.cat`` (:func:`grown_names`) or
    ``tokens.append(...)`` directly in its body; else None.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef caption(model, image, tokens):\\n    for _ in range(9):\\n"
        ...        "        f = model.vision_encoder(image)\\n"
        ...        "        tokens.append(model.decoder(tokens, f).argmax())\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD601']
    """
    grown = grown_names(rules, loop) | {
        dotted(stmt.value.func.value) for stmt in loop.body
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
        and method_name(stmt.value) == "append" and isinstance(stmt.value.func.value, ast.Name)
    }  # fmt: skip
    fed = {
        n.id
        for call in rules.direct_calls(loop.body)
        if method_name(call) != "append" and not rules.callee(call) & _CAT
        for arg in [*call.args, *(k.value for k in call.keywords)]
        for n in ast.walk(arg)
        if isinstance(n, ast.Name)
    }  # fmt: skip
    # ... or the token appended is the one fed back (an RNN decoder's `y = dist.argmax(1)`,
    # `model.embedding(y)` next step, `out.append(y)`: pointer-generator's greedy decode)
    appended = {
        stmt.value.args[0].id for stmt in loop.body
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
        and method_name(stmt.value) == "append" and len(stmt.value.args) == 1
        and isinstance(stmt.value.args[0], ast.Name)
    }  # fmt: skip
    made = {t.id for stmt in loop.body if isinstance(stmt, ast.Assign)
            for t in stmt.targets if isinstance(t, ast.Name)}  # fmt: skip
    found = sorted(grown & fed) or sorted(appended & fed & made)
    return found[0] if found else None


def loops_over_modules(loop: ast.AST) -> bool:
    """``for key, net in self.nets.items():`` runs each sub-module once per call: the loop is
    part of a forward pass, not an evaluation loop over data (TD602).

    Example:
        >>> loops_over_modules(ast.parse("for k, net in self.nets.items():\\n    net(x)").body[0])
        True
        >>> loops_over_modules(ast.parse("for k, v in outs.items():\\n    model(v)").body[0])
        False
    """
    if isinstance(loop, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        loop = loop.generators[0]  # ([net(x) for net in self.nets])
    elif not isinstance(loop, FOR):
        return False
    it = loop.iter  # type: ignore[attr-defined]
    names = target_names(loop.target)  # type: ignore[attr-defined]
    if isinstance(it, ast.Call) and method_name(it) in {"items", "values"}:
        # a dict of modules: its values are called (`net(x)`); a dict of data (`for name,
        # frames in outputs.items(): flow_model(frames)`) is a loop over data
        called = {
            node.func.id
            for node in ast.walk(loop)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        if called & set(names):
            return True
    return any(MODEL_NAME.search(n) for n in names)


def timesteps_read(loop: ast.For, seed: frozenset[str] = frozenset()) -> set[str]:
    """Names the loop's body sets to a timestep it reads at the loop variable (``t =
    timesteps[i]``), and the names made from them in turn (``vec_t = torch.ones(b) * t``,
    ``t.expand(b)``; not a model's output ``x = f(x, t)``); with ``seed`` (the loop variable
    of a range walked backwards), the names made from those too (``t = i * stride``).

    Example:
        >>> loop = ast.parse("for i in range(n):\\n    t = ts[i]\\n    v = t * 2\\n    x = f(x, v)").body[0]
        >>> sorted(timesteps_read(loop))
        ['t', 'v']
        >>> sorted(timesteps_read(ast.parse("for i in range(n):\\n    t = ts[i]\\n    tt = t.repeat(2)").body[0]))
        ['t', 'tt']
    """
    counters = target_names(loop.target)
    found: set[str] = set(seed)
    for stmt in loop.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):  # fmt: skip
            continue
        name, value = stmt.targets[0].id, stmt.value
        read = (isinstance(value, ast.Subscript) and TIMESTEP_TARGET.match(name)
                and set(dotted_names_in(value.slice)) & counters)  # fmt: skip
        made = not isinstance(value, ast.Call) or (  # (t * ones(b), t.expand(b); not f(x, t))
            isinstance(value.func, ast.Attribute) and set(dotted_names_in(value.func.value)) & found
        )
        # (a method of a timestep, `t.repeat(b)`, reads it as `t.repeat`: its receiver counts)
        if read or (made and (isinstance(value, ast.Call) or set(dotted_names_in(value)) & found)):
            found.add(name)
    return found - seed


def descending(steps: ast.Call, it: ast.AST) -> bool:
    """``torch.linspace(999, 0, n)`` (a start above its end), or any torch range flipped on
    the way to the loop (``torch.arange(n).flip(0)``).

    Example:
        >>> it = ast.parse("torch.linspace(999, 0, 50).long()", mode="eval").body
        >>> descending(it.func.value, it)
        True
    """
    if "flip" in ast.unparse(it):
        return True
    ends = [a.value for a in steps.args[:2] if isinstance(a, ast.Constant)]
    return len(ends) == 2 and all(isinstance(e, int | float) for e in ends) and ends[0] > ends[1]
