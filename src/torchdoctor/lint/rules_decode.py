"""TD604: an autoregressive loop that feeds the whole growing sequence back to the model.

nanoGPT's ``generate`` appends each new token with ``torch.cat`` and calls the model on the
whole sequence again: every step recomputes the keys and values of every earlier token (the
runtime rule ``decode-without-cache`` measures what that costs from the run's own steps).
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.denoising_loops import grown_names
from torchdoctor.lint.model_calls import names_a_module, passed_a_module
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.rules_inference import LIBRARY_PREFIXES
from torchdoctor.lint.visitor import RuleVisitor, dotted, dotted_names_in

RULES = (
    Rule(
        "TD604",
        "decode-without-kv-cache",
        "warning",
        "autoregressive loop feeding the whole growing sequence back to the model at every step "
        "(x = torch.cat((x, new), dim=1) and model(x) in one loop): each step recomputes every "
        "earlier token",
        "keep each layer's keys and values (a KV cache) and feed only the new token "
        "(Hugging Face: use_cache=True / past_key_values)",
        "for _ in range(n):\n    logits = model(idx)\n"
        "    idx = torch.cat((idx, logits[:, -1:].argmax(-1)), dim=1)",
        "for _ in range(n):\n    logits, cache = model(idx[:, -1:], cache)\n"
        "    idx = torch.cat((idx, logits[:, -1:].argmax(-1)), dim=1)",
    ),
)

#: a keyword that passes a cache: the call already reuses earlier keys and values (an
#: encoder's output, nn.Transformer's ``memory``, is no cache of the decoder's own keys)
_CACHE_KEYWORD = re.compile(r"past|cache|kv|state|^mems?$", re.IGNORECASE)


def cache_off(value: ast.AST) -> bool:
    """``False`` / ``None``: a cache keyword that turns the cache off (``use_cache=False``).

    Example:
        >>> cache_off(ast.parse("False", mode="eval").body)
        True
    """
    return isinstance(value, ast.Constant) and value.value in (False, None)
#: ... of those, names an encoder's output has as well (a cache only when the loop carries it)
_MEMORY = re.compile(r"^(mems?|states?)$", re.IGNORECASE)
#: a module's methods that run its decoder (or, re-encoding, its encoder) on the sequence they are
#: given
_DECODE_METHODS = frozenset({"forward", "decode", "decoder", "encode", "encoder"})
#: ... and method names that run it on what they are given (a Decision Transformer's get_action)
_RUNS_PREFIXES = ("get_action", "predict", "act", "generate_step", "step")  # (model.step(seq))


def _submodule(attribute: str) -> bool:
    """``dec_emb`` of ``model.dec_emb(seq)``: a layer of the model run by hand (a loop that
    embeds and decodes the whole sequence itself), not a helper method (``model.tokenize``).

    Example:
        >>> _submodule("dec_emb"), _submodule("to_text"), _submodule("decode_text")
        (True, False, False)
    """
    return bool(_LAYER.search(attribute))


#: attribute names of a model's layers: embeddings, projections, heads, blocks
_LAYER = re.compile(r"^(\w+_)?(emb|embed|embedding|embeddings|proj|head|blocks?|layers?|"
                    r"lm_head|wte|wpe|tok_emb|pos_emb|dec_\w+|enc_\w+)$")


def last_tokens(expr: ast.AST) -> bool:
    """``ys[:, -1:]``, ``ys[:, -1]``, ``ys[-1:]``: the newest token only, not the sequence.

    Example:
        >>> [last_tokens(ast.parse(c, mode="eval").body) for c in ("ys[:, -1:]", "ys[:, -8:]", "ys")]
        [True, False, False]
    """
    if not isinstance(expr, ast.Subscript):
        return False
    last = expr.slice.elts[-1] if isinstance(expr.slice, ast.Tuple) else expr.slice
    bound = last.lower if isinstance(last, ast.Slice) and last.upper is None else last
    return isinstance(bound, ast.UnaryOp) and isinstance(bound.op, ast.USub) and (
        isinstance(bound.operand, ast.Constant) and bound.operand.value == 1)


#: the keywords a Hugging Face model takes its token ids by
_TOKEN_KEYWORDS = frozenset({"input_ids", "decoder_input_ids"})


def _window_crop(loop: ast.For | ast.While, fed: set[str]) -> ast.Subscript | None:
    """The first ``seq[:, -n:]`` (a slice from a negative start) of a grown name in the loop:
    nanoGPT's ``idx[:, -self.config.block_size:]`` keeps the last ``block_size`` tokens.

    Example:
        >>> loop = ast.parse("for _ in r:\\n    c = idx[:, -8:]\\n").body[0]
        >>> ast.unparse(_window_crop(loop, {"idx"}))
        'idx[:, -8:]'
    """
    for node in ast.walk(loop):
        if not isinstance(node, ast.Subscript) or dotted(node.value) not in fed or last_tokens(node):
            continue  # (y[:, -1:]: the newest position, read out, not a window fed back)
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        for part in parts:
            lower = part.lower if isinstance(part, ast.Slice) else None
            if isinstance(lower, ast.UnaryOp) and isinstance(lower.op, ast.USub):
                return node
    return None


class DecodeRules(RuleVisitor):
    """TD604 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef gen(model, idx):\\n    for _ in range(9):\\n"
        ...        "        y = model(idx)\\n        idx = torch.cat((idx, y[:, -1:]), dim=1)\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD604']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"\.cat\(|\.concat",),)

    # -- TD604 ---------------------------------------------------------------------------------
    def _check_growing_sequence(self, loop: ast.For | ast.While) -> None:
        fed = grown_names(self, loop)
        fed -= {a.targets[0].id for a in ast.walk(loop) if isinstance(a, ast.Assign) and len(  # (the
            a.targets) == 1 and isinstance(a.targets[0], ast.Name) and last_tokens(a.value)}  # newest, named)
        if not fed:
            return
        for call in self.direct_calls(loop.body):
            callee = dotted(call.func)
            if callee is None or any(n.startswith(LIBRARY_PREFIXES) for n in self.callee(call)):
                continue
            last = callee.rsplit(".", 1)[-1]
            receiver = callee.rsplit(".", 1)[0] if "." in callee else ""
            if not (
                callee == "self"
                or names_a_module(last)
                or (last in _DECODE_METHODS and (receiver == "self" or names_a_module(receiver)))
                or (names_a_module(receiver.rsplit(".", 1)[-1]) and (
                    last.startswith(_RUNS_PREFIXES) or _submodule(last)))  # (model.dec_emb(seq))
                or self._transformers_call(call)
                or passed_a_module(self, call)  # (`gpt(idx)`, every caller handing a Module)
            ):
                continue
            if any(k.arg and _CACHE_KEYWORD.search(k.arg) and not cache_off(k.value)
                   for k in call.keywords) or any(  # (use_cache=False: no cache at all)
                isinstance(a, ast.Name) and _CACHE_KEYWORD.search(a.id) and a.id not in fed and (
                    not _MEMORY.match(a.id) or a.id in self.assigned_in(loop))  # (an encoder's
                for a in call.args  # `mem` is no cache: one a step carries is; nor the states
            ):  # the loop grows with torch.cat, a Decision Transformer's history)
                continue  # a cache is passed already
            values = [*call.args, *(k.value for k in call.keywords)]  # model(input_ids=ids)
            values = [v for v in values if not last_tokens(v)]  # (ys[:, -1:]: the new one)
            names = {n for a in values if isinstance(a, (ast.Name, ast.Subscript))
                     for n in dotted_names_in(a)}  # fmt: skip
            if names & fed:
                crop = _window_crop(loop, fed)
                self.report(
                    call,
                    "TD604",
                    f"`{self.code_of(call)}` gets the whole sequence, which the loop grows "
                    "with torch.cat at every step: each step recomputes every earlier token; "
                    "keep a KV cache and feed only the new token"
                    + (
                        f" (the loop crops the sequence to a window, `{self.code_of(crop)}`: "
                        "the cache serves until the window is full; past it, learned absolute "
                        "positions shift with every token, so either re-encode the window "
                        "there or keep a rolling cache with relative or rotary positions)"
                        if crop is not None
                        else ""
                    ),
                )

    def _transformers_call(self, call: ast.Call) -> bool:
        """A Hugging Face model's call, whatever it is named (``reader(...)``): token ids
        passed by their keyword, or its ``.logits`` read."""
        parent = self.parent(call)
        return any(k.arg in _TOKEN_KEYWORDS for k in call.keywords) or (
            isinstance(parent, ast.Attribute) and parent.attr == "logits"
        )

    def visit_While(self, node: ast.While) -> None:
        self._check_growing_sequence(node)

    def visit_For(self, node: ast.For) -> None:
        self._check_growing_sequence(node)
