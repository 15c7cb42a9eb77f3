"""TD6xx: inference loops (seed 001): re-encoding invariant inputs, missing no_grad."""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.denoising_loops import (
    TIMESTEP_TARGET,
    eval_named,
    grows_a_sequence,
    invariant_inner_calls,
    loops_over_modules,
)
from torchdoctor.lint.eval_loops import (
    NO_GRAD,
    eval_loops,
    evaluated_in_init,
    given_eval_models,
    held_out_loops,
    loaded_in_eval_mode,
)
from torchdoctor.lint.mask_writes import mask_assignments
from torchdoctor.lint.model_calls import (
    chain_root,
    mc_dropout,
    passed_a_module,
)
from torchdoctor.lint.model_runs import ModelRuns
from torchdoctor.lint.project_scan import STEP_ITERABLES
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.sampler_copies import host_copies, iterative_sampler
from torchdoctor.lint.sampling_loops import sampling_loop
from torchdoctor.lint.tensors import JOINS, instance_method
from torchdoctor.lint.visitor import (
    FUNCTIONS,
    MODEL_NAME,
    RuleVisitor,
    dotted,
    dotted_names_in,
    method_name,
    target_names,
)

#: a decorator of the project's own that turns autograd off, by its name
_GRAD_OFF_DECORATOR = re.compile(r"(?i)inference_mode|no_grad")
LIBRARY_PREFIXES = ("torch.", "builtins.", "numpy.", "math.", "scipy.", "einops.")
#: ... also the common short form as a word of the name (`self.enc`, `scaffold_enc`, `text_enc2`)
ENCODER_CALL = re.compile(r"encod|embed|cond|project|proj|(^|_)enc(\d*$|_)", re.IGNORECASE)
#: LightningModule hooks the Trainer runs without autograd (a file importing Lightning)
_LIGHTNING_NO_GRAD = frozenset({"validation_step", "test_step", "predict_step"})
_LIGHTNING = re.compile(r"(?m)^\s*(import|from)\s+(lightning|pytorch_lightning)\b")
#: nn.Module's own methods: `model.to(device)`, `model.half()` run no submodule
_MODULE_OWN = frozenset({"to", "cuda", "cpu", "half", "float", "double", "bfloat16", "eval",
                         "train", "requires_grad_", "zero_grad", "apply", "type", "state_dict",
                         "load_state_dict", "parameters", "named_parameters", "modules"})  # fmt: skip
#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).

RULES = (
    Rule(
        "TD601",
        "invariant-call-in-denoising-loop",
        "warning",
        "module call with loop-invariant arguments inside a denoising loop (over "
        "scheduler.timesteps or range(num_inference_steps), or over range(...) in a sample/"
        "generate/denoise function with a timestep variable t, or the variable of a range walked "
        "backwards, passed to the denoiser), or an encoder's call with loop-invariant arguments "
        "in an autoregressive decoding loop (one growing its tokens with torch.cat or append)",
        "encode the conditioning once before the loop and reuse it in every step",
        "for t in scheduler.timesteps:\n    cond = self.encoder(tokens)\n    x = step(x, t, cond)",
        "cond = self.encoder(tokens)\nfor t in scheduler.timesteps:\n    x = step(x, t, cond)",
        seed="001",
    ),
    Rule(
        "TD602",
        "eval-loop-without-no-grad",
        "warning",
        "evaluation/inference loop without torch.no_grad() / torch.inference_mode()",
        "wrap the loop (or decorate the function) with torch.inference_mode(); torch.no_grad() "
        "when its outputs later enter autograd (inference tensors cannot)",
        "model.eval()\nfor x in loader:\n    out = model(x)",
        "model.eval()\nwith torch.inference_mode():\n    for x in loader:\n        out = model(x)",
        seed="001",
    ),
    Rule(
        "TD603",
        "mask-assignment-in-denoising-loop",
        "warning",
        "boolean-mask assignment x[mask] = y in every denoising step (a nonzero() and a host "
        "sync per step)",
        "x = torch.where(mask, y, x) keeps the step on the device without a sync",
        "for t in scheduler.timesteps:\n    x[cond_mask] = cond[cond_mask]\n"
        "    x = scheduler.step(model(x, t), t, x)",
        "for t in scheduler.timesteps:\n    x = torch.where(cond_mask, cond, x)\n"
        "    x = scheduler.step(model(x, t), t, x)",
        seed="001",
    ),
    Rule(
        "TD606",
        "host-copy-in-denoising-loop",
        "warning",
        "a tensor copied or read to the host (.cpu(), .to('cpu'), .item(), .numpy(), .tolist()) "
        "in every step of a denoising or Langevin sampling loop (keeping each step's sample: "
        "images.append(x.to('cpu'))): a host-device sync per step, the GPU's queue drained and "
        "the next step launched late",
        "keep the step's results on the device (append x.detach()) and move them once after the "
        "loop (torch.stack(frames).cpu()), or every N steps",
        "for t in scheduler.timesteps:\n    x = scheduler.step(model(x, t), t, x).prev_sample\n"
        "    frames.append(x.cpu())",
        "for t in scheduler.timesteps:\n    x = scheduler.step(model(x, t), t, x).prev_sample\n"
        "    frames.append(x.detach())\nframes = torch.stack(frames).cpu()",
        cuda_only=True,
    ),
)


class InferenceRules(ModelRuns, RuleVisitor):
    """TD601 invariant module call in a denoising loop; TD602 eval loop without no_grad.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> [f.code for f in lint_source("def evaluate(model, loader):\\n    model.eval()\\n    for x in loader:\\n        y = model(x)\\n")]
        ['TD602']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (
        (
            r"(?i)timesteps|inference_steps|sampling_steps|denois|diffusion_steps|ddim|ddpm|"
            r"reversed\(|linspace\(|,\s*-1\s*,\s*-1\s*\)|"  # (a count-down loop)
            r"\.eval\(\)|def (\w*_)?(eval|evaluate|evaluation|infer|inference|sample|sampling|"
            r"sampler|generate|generation|denoise|denoising|diffuse|diffusion|reverse|rollout|"
            r"plan|predict|prediction|validate|validation)(_\w*)?\s*\(|encod|embed|cond|proj|"
            r"langevin|mcmc|sgld|anneal",  # (a Markov-chain sampler: TD606)
        ),
    )

    # -- TD601 ---------------------------------------------------------------------------------
    def visit_For(self, node: ast.For) -> None:
        if sampling_loop(self, node):
            self._check_denoising_loop(node)
        elif grows_a_sequence(self, node):  # (an autoregressive decoder's loop: its encoder alone)
            self._check_denoising_loop(node, "decoding step")
        elif iterative_sampler(self, node):  # (NCSN's Langevin loops: its host copies alone)
            self._check_host_copies(node)

    def visit_While(self, node: ast.While) -> None:
        """``while t >= 0: x = denoiser(x, t, ...); t -= 1``: a timestep counted down by
        hand into a call; ``while ids.shape[1] < n: ...; ids = torch.cat([ids, nxt], 1)``: an
        autoregressive decoder's loop (its encoder called with the same arguments)."""
        counter = {
            n for n in dotted_names_in(node.test) if "." not in n and TIMESTEP_TARGET.match(n)
        }
        lowered = {
            stmt.target.id
            for stmt in node.body
            if isinstance(stmt, ast.AugAssign)
            and isinstance(stmt.op, ast.Sub)
            and isinstance(stmt.target, ast.Name)
        }
        passed = {
            name
            for call in self.direct_calls(node.body)
            for arg in [*call.args, *(k.value for k in call.keywords)]
            for name in dotted_names_in(arg)
        }
        if counter & lowered & passed:
            self._check_denoising_loop(node)
        elif grows_a_sequence(self, node):  # (`while ids.shape[1] < n:` decoding: its encoder)
            self._check_denoising_loop(node, "decoding step")

    def _check_denoising_loop(self, node: ast.For | ast.While, step: str = "") -> None:
        """TD601/TD603 in a denoising loop; with ``step`` ("decoding step"), only TD601 on
        the calls named like an encoder (a decoder's loop calls other things unchanged)."""
        if self.is_training_body(node):
            return
        if not step:
            self._check_mask_assignments(node)
            self._check_host_copies(node)
        covered: set[int] = set()  # (calls inside a reported one: `enc(x, mlp(s))` is one)
        fixed: dict[str, int] = {}  # names the loop binds only to a reported call's result
        for call in sorted(self.direct_calls(node.body), key=lambda c: (c.lineno, c.col_offset)):
            if id(call) in covered:
                continue
            callee = dotted(call.func)
            if callee is None and isinstance(call.func, ast.Call) and not (
                call.func.args or call.func.keywords
            ):  # (a module a getter returns: `reader.get_encoder()(input_ids=...)`)
                callee = dotted(call.func.func)
            if callee is None or "scheduler" in callee.lower():
                continue
            if any(n.startswith(LIBRARY_PREFIXES) for n in self.callee(call)):
                continue
            last = callee.rsplit(".", 1)[-1]
            model_like = ENCODER_CALL.search(last) if step else (
                callee.startswith("self.") or MODEL_NAME.search(last) or ENCODER_CALL.search(last)
                or passed_a_module(self, call)  # (`text(prompts)`, every caller handing a Module)
                or _submodule_call(callee)  # (`model.upsampler(mel)`: a part of the model)
            )
            args = [*call.args, *(k.value for k in call.keywords)]
            if not args:
                continue
            from_fixed = [a.id for a in args if isinstance(a, ast.Name) and a.id in fixed]
            if model_like and all(
                not isinstance(a, ast.Starred)
                and (self._invariant_arg(a, node) or getattr(a, "id", None) in fixed)
                for a in args
            ) and all(k.arg is not None for k in call.keywords):
                covered.update(id(c) for c in ast.walk(call) if isinstance(c, ast.Call))
                fixed.update(dict.fromkeys(self._bound_once(call, node), call.lineno))
                through = (f" (`{from_fixed[0]}` is the result of the call at line "
                           f"{fixed[from_fixed[0]]}, the same every step)" if from_fixed else "")  # fmt: skip
                self.report(
                    call,
                    "TD601",
                    f"`{self.code_of(call)}` gets the same arguments in every "
                    f"{step or 'denoising step'}{through}: "
                    "compute it once before the loop and reuse the result",
                )
                continue
            seen = self.context.cache.setdefault(("TD601 one call deep",), set())
            for inner in () if step else invariant_inner_calls(self, call, node, ENCODER_CALL):
                if id(inner) in seen:
                    continue  # (a helper two loops call: one finding)
                seen.add(id(inner))
                self.report(
                    inner,
                    "TD601",
                    f"`{self.code_of(inner)}` gets the same arguments in every denoising step "
                    f"(through `{self.code_of(call.func)}(...)` at line {call.lineno}): compute "
                    "it once before the loop and pass the result in",
                )

    def _check_host_copies(self, loop: ast.For | ast.While) -> None:
        """TD606: a host copy in every step of a sampler's loop (told once: a Langevin
        corrector loop nested in the noise levels' is both loops')."""
        told = self.context.cache.setdefault(("TD606 told",), set())
        for call in host_copies(self, loop):
            if id(call) in told:
                continue
            told.add(id(call))
            self.report(
                call,
                "TD606",
                f"`{self.code_of(call)}` copies a tensor to the host in every sampling step (a "
                "host-device sync each step on a GPU run: the GPU's queue drains and the next "
                "step launches late): keep the results on the device "
                "(`frames.append(x.detach())`) and move them once after the loop "
                "(`torch.stack(frames).cpu()`), or every N steps",
            )

    def _assigned_to(self, call: ast.Call) -> str | None:
        """The one name a statement assigns the result of ``call`` (a chain ending in it)."""
        node, parent = call, self.parent(call)
        while isinstance(parent, ast.Attribute | ast.Call) and (
                getattr(parent, "value", None) is node or getattr(parent, "func", None) is node):
            node, parent = parent, self.parent(parent)  # fmt: skip
        if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
            return dotted(parent.targets[0])
        return None

    def _bound_once(self, call: ast.Call, loop: ast.AST) -> list[str]:
        """The names a statement of the loop's body binds to ``call``'s result (``latent, _, _
        = mae.forward_encoder(imgs, ids)``) when nothing else in the loop binds them."""
        statement = self.parent(call)
        if not (isinstance(statement, ast.Assign) and statement.value is call
                and statement in getattr(loop, "body", ())):
            return []  # fmt: skip
        names = [n for t in statement.targets for n in target_names(t) if n != "_"]
        others = [n for node in ast.walk(loop) if node is not statement and isinstance(
            node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.For)
            for t in getattr(node, "targets", [getattr(node, "target", None)]) if t is not None
            for n in target_names(t)]  # fmt: skip
        return [n for n in names if n not in others]

    def _invariant_arg(self, arg: ast.AST, loop: ast.AST) -> bool:
        """Loop-invariant, or a module call on loop-invariant arguments (the ego MLP's output
        handed to the encoder: ``self.encoder(vl, self.ego_mlp(ego))``)."""
        if self.is_invariant(arg, loop):
            return True
        parts = (arg.args or [None])[0] if isinstance(arg, ast.Call) and self.callee(arg) & JOINS else None
        if isinstance(parts, (ast.List, ast.Tuple)):  # (encoder(torch.cat([uncond, prompt])))
            return all(self._invariant_arg(e, loop) for e in parts.elts)
        callee = dotted(arg.func) if isinstance(arg, ast.Call) else None
        last = (callee or "").rsplit(".", 1)[-1]
        return (callee is not None and bool(arg.args) and not arg.keywords  # type: ignore[attr-defined]
                and (callee.startswith("self.") or bool(MODEL_NAME.search(last)
                                                        or ENCODER_CALL.search(last)))
                and all(
                    not isinstance(a, ast.Starred) and self._invariant_arg(a, loop)
                    for a in arg.args))  # fmt: skip

    def _check_mask_assignments(self, loop: ast.For | ast.While) -> None:
        """TD603: ``x[mask] = ...`` with a boolean mask, every step."""
        for stmt, target in mask_assignments(self, loop):
            self.report(
                target,
                "TD603",
                f"`{self.code_of(stmt)}` assigns through a boolean mask in every "
                "denoising step (a nonzero() and a host sync each time): "
                f"`{self.code_of(target.value)} = torch.where(mask, value, "
                f"{self.code_of(target.value)})` stays on the device",
            )

    # -- TD602 ---------------------------------------------------------------------------------
    def visit_Module(self, node: ast.Module) -> None:
        """A script's top level (``if __name__ == "__main__":``), as a function's body."""
        body = [s for s in node.body if not isinstance(s, (*FUNCTIONS, ast.ClassDef))]
        if body:
            self._check_eval(node, body, False, [])

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in _LIGHTNING_NO_GRAD and _LIGHTNING.search(self.context.source):
            return  # (Lightning's Trainer runs these hooks under inference_mode)
        self._check_eval(node, node.body, eval_named(node.name), node.decorator_list)

    def _check_eval(self, node: ast.AST, body: list, named: bool, decorators: list) -> None:
        lines = self.context.lines[body[0].lineno - 1 : body[-1].end_lineno]
        sampled = isinstance(node, FUNCTIONS) and mc_dropout(node, lines)
        loaded = set() if named or sampled else loaded_in_eval_mode(body, self.context)
        if not (named or sampled or loaded) and not any(".eval()" in x for x in lines):
            loaded = given_eval_models(self, node)  # (translate_folder(G, ...), G an eval model)
        init = evaluated_in_init(node) if not (named or sampled or loaded) else set()
        if not (named or sampled or loaded or init) and not any(".eval()" in x for x in lines):
            for loop in held_out_loops(self, body):  # (a train-and-validate function's)
                if self._calls_model(loop, set()):
                    self._report_eval(node, loop)
            return  # neither an evaluation function nor one calling .eval() or a loader that does
        body_calls = [n for stmt in body for n in ast.walk(stmt) if isinstance(n, ast.Call)]
        kept_in = {"eval", "train"} if sampled else {"eval"}
        eval_receivers = {  # (model.eval() may sit inside an epoch loop)
            dotted(chain_root(c.func.value)) or self._assigned_to(c)  # (model.to(d).eval():
            for c in body_calls  # model; model = Net().to(d).eval(): model too)
            if method_name(c) in kept_in and not c.args and not c.keywords
            and instance_method(c, self) is None  # (Rainbow's env.eval(): its class's own eval)
        } - {None} | loaded
        init_only = not eval_receivers and not named  # (PatchCore's fit: __init__'s .eval())
        eval_receivers |= init
        if not eval_receivers and (not named or getattr(node, "name", "_")[:1] == "_"):
            return  # (a private `_sample` runs under its public caller's grad mode)
        for deco in decorators:
            target = deco.func if isinstance(deco, ast.Call) else deco
            if self.qualified_names(target) & NO_GRAD or _GRAD_OFF_DECORATOR.search(
                (dotted(target) or "").rsplit(".", 1)[-1]
            ):
                return  # (a project's own wrapper: ultralytics' @smart_inference_mode())
        for call in body_calls:
            names = self.callee(call)
            if names & {"torch.set_grad_enabled", "torch.autograd.grad"} or method_name(call) in {
                "requires_grad_",
            }:
                return
        callers_checked = False
        for loop in eval_loops(self, body):
            if loops_over_modules(loop) or init_only and not (isinstance(loop, ast.For) and any(
                    STEP_ITERABLES.search(n) for n in dotted_names_in(loop.iter))):  # fmt: skip
                continue  # (with only __init__'s .eval(): a loop over a data loader)
            if self._calls_model(loop, eval_receivers):
                if not callers_checked:
                    callers_checked = True
                    if self._callers_disable_grad(node):
                        return
                self._report_eval(node, loop)

    def _report_eval(self, node: ast.AST, loop: ast.AST) -> None:
        self.report(
            loop,
            "TD602",
            "evaluation/inference loop runs with autograd on (it records a graph and "
            "keeps activations): wrap it in `with torch.inference_mode():`"
            + ("" if isinstance(node, ast.Module)
               else " or decorate the function with @torch.inference_mode()")
            + " (torch.no_grad() if its outputs later enter autograd)",
        )


InferenceRules.visit_AsyncFunctionDef = InferenceRules.visit_FunctionDef  # type: ignore[attr-defined]
InferenceRules.visit_AsyncFor = InferenceRules.visit_For  # type: ignore[attr-defined]


def _submodule_call(callee: str) -> bool:
    """``model.upsampler``: an attribute of a name that says model (DiffWave's conditioner,
    LDM's ``model.get_learned_conditioning``), not one of nn.Module's own methods.

    Example:
        >>> [_submodule_call(c) for c in ("model.upsampler", "model.to", "x.upsampler", "model")]
        [True, False, False, False]
    """
    parts = callee.split(".")
    return len(parts) == 2 and bool(MODEL_NAME.search(parts[0])) and parts[1] not in _MODULE_OWN
