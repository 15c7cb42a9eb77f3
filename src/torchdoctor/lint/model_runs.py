"""TD602's view of a loop's calls: whether a loop of an evaluation function runs a model
(``model(x)``, ``self.encoder(x)``, a function of the project handed the model, a method of
the class that runs a model of it) with autograd on, and whether its callers turn autograd
off. A mixin of :class:`torchdoctor.lint.rules_inference.InferenceRules`.
"""

from __future__ import annotations

import ast

from torchdoctor.lint.eval_loops import method_runs, under_no_grad, wrapper_runs_model
from torchdoctor.lint.model_calls import names_a_module, passed_a_module, runs_the_module
from torchdoctor.lint.visitor import FUNCTIONS, dotted

#: methods libraries run without autograd (stable-baselines3's and the trainers' ``predict``,
#: transformers' ``generate``)
_LIBRARY_NO_GRAD_METHODS = frozenset({"predict", "generate"})


class ModelRuns:
    """The TD602 checks of what a loop runs (the visitor's ``context``, ``callee`` and
    ``parent`` are used).

    Example:
        >>> from torchdoctor.lint.rules_inference import InferenceRules
        >>> issubclass(InferenceRules, ModelRuns)
        True
    """

    def _method_disables_grad(self, method: str) -> bool:
        """``model.predict(x)`` runs without autograd: every definition of the method in the
        project turns it off (stable-baselines3's ``policy.predict``), or, defined nowhere in
        it, the method is a library's API that does (``predict``: stable-baselines3, the
        Hugging Face and Lightning trainers; ``generate``: transformers' @torch.no_grad())."""
        if method == "forward":
            return False
        project = self.context.project
        verdict = project.method_disables_grad(method) if project is not None else None
        return verdict is True or (verdict is None and method in _LIBRARY_NO_GRAD_METHODS)

    def _callers_disable_grad(self, node: ast.AST) -> bool:
        """Every caller in the project runs ``node`` under no_grad (one or two calls up:
        ``conditional_sample`` <- ``predict_action`` <- ``with torch.no_grad():``), or only a
        module's ``forward`` calls it: the model's own computation, trained through when the
        forward is (PointNetLK's Lucas-Kanade iterations put the embedding network in eval mode
        for its batch norms, and backpropagate), or a caller differentiates what it returns (a
        GFlowNet's trajectory sampler: the log-probabilities it sums are the loss's)."""
        project = self.context.project
        if project is None or not isinstance(node, FUNCTIONS) or node.name.startswith("__"):
            return False
        return project.callers_run_without_grad(node.name, home=self.context.path) is True or (
            node.name != "forward" and project.caller_functions(node.name) == {"forward"}
        ) or project.results_differentiated(  # (a sampler whose log-probs are trained)
            node.name, home=self.context.path, method=isinstance(self.parent(node), ast.ClassDef))

    def _calls_model(self, loop: ast.AST, receivers: set[str]) -> bool:
        """True when the loop calls a module: ``model(x)``, ``self.encoder(x)``,
        ``model.forward(x)``, ``model.encoder(x)``; methods such as ``model.named_modules()`` do not count."""
        for call in ast.walk(loop):
            if not isinstance(call, ast.Call):
                continue
            callee = dotted(call.func)
            if callee is None or under_no_grad(self, call, loop):
                continue
            receiver, _, last = callee.rpartition(".")
            receiver_is_model = receiver in receivers or bool(receiver and names_a_module(
                receiver.rsplit(".", 1)[-1]))  # fmt: skip
            if receiver_is_model:  # (a submodule: `model.encoder(mel)`; CLIP's encode_image)
                if runs_the_module(last, receiver in receivers):
                    if not self._method_disables_grad(last):
                        return True
                elif names_a_module(last) or (receiver in receivers and wrapper_runs_model(
                        self, receiver, last)):  # (tracker.update(frame): its self.model runs)
                    return True
                continue  # (plumbing: model.state_dict(), model.get_config())
            if isinstance(call.func, ast.Name) and last[:1].isupper() and callee not in receivers:
                continue  # (a class built, `net = RRDBNet()`: no model run; not `G(x)`, an eval model)
            if callee in receivers or names_a_module(last) or passed_a_module(self, call):
                return True
            if self._runs_model_passed(call, last, receivers) or method_runs(
                    call, {r for r in receivers if r.startswith("self.")}):
                return True  # (or self._embed(x), running self.extractor)
        return False

    def _runs_model_passed(self, call: ast.Call, name: str, receivers: set[str]) -> bool:
        """``predict_batch(model, x)``: the model passed to a function of the project that
        calls it with autograd on (:meth:`Project.runs_argument`) and needs no gradient."""
        project = self.context.project  # (SchNet's forces: autograd.grad of the energy)
        if project is None or project.method_disables_grad(name) is True or project.function_needs_grad(name):
            return False  # (a helper under @torch.inference_mode(): ESRGAN's upscale(net, x))

        def is_model(arg: ast.AST) -> bool:
            text = dotted(arg)
            return text is not None and (text in receivers or names_a_module(text.rsplit(".", 1)[-1]))

        return any(
            is_model(arg) and project.runs_argument(name, i, None)
            for i, arg in enumerate(call.args)
        ) or any(
            kw.arg is not None and is_model(kw.value) and project.runs_argument(name, None, kw.arg)
            for kw in call.keywords
        )
