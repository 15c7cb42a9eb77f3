"""Rule ``rnn-per-step``: an ``nn.GRU`` / ``nn.LSTM`` / ``nn.RNN`` module called several times
per step, most likely one time step per call from a Python loop.

These modules take a whole sequence (``(L, N, H)``, or ``(N, L, H)`` with ``batch_first``) and
run its time steps in one call: one kernel launch per layer on a GPU (cuDNN), one autograd node
instead of L, no Python per token. The PyTorch seq2seq tutorial's encoder calls its ``nn.GRU``
once per input token with a sequence of length 1; run over the whole sentence in one call, the
same math took a training iteration from 44.05 to 27.41 ms on a CPU (-38%). A decoder that feeds
its own output back (greedy decoding) cannot do that; under teacher forcing it can. The rule
says so and states no saving: the profile does not show the calls' sequence lengths.

Example:
    >>> gru = {"kind": "module", "path": "encoder.gru", "type": "GRU", "calls_per_step": 7.0,
    ...        "total_ms": {"median": 6.6}, "children": []}
    >>> tree = {"kind": "root", "total_ms": {"median": 47.0}, "children": [gru]}
    >>> (advice,) = rnn_per_step({"step_ms": {"median": 47.0}, "tree": tree})
    >>> advice.title
    'encoder.gru (GRU) is called 7 times per step: one time step per call? Pass the whole sequence in one call'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, node_ms, pct, tree_step_ms
from torchdoctor.analyze.advice.module_names import named_modules

#: the sequence modules (not the cells: the dominant-module advice tells a cell's loop)
SEQUENCE_TYPES = frozenset({"GRU", "LSTM", "RNN"})
#: calls per step from which a module is called per time step, and its share of the step
MIN_CALLS = 4.0
MIN_SHARE = 0.05

_FIX = (
    "nn.GRU, nn.LSTM and nn.RNN take a whole sequence, (L, N, H) (or (N, L, H) with "
    "batch_first=True), and run its time steps in one call: one autograd node instead of one "
    "per step, no Python per token, cuDNN's fused kernel on a GPU. Where the inputs are known "
    "before the loop (an encoder; a decoder under teacher forcing), stack them and make one "
    "call, taking the per-step outputs from its output; pad or pack several sequences "
    "(torch.nn.utils.rnn.pack_padded_sequence) to batch them too. A decoder that feeds its own "
    "prediction back (greedy or sampled decoding) has to stay step by step. The PyTorch "
    "seq2seq tutorial's encoder, one call per token, made one call per sentence: 44.05 -> "
    "27.41 ms per training iteration on a CPU."
)


def rnn_per_step(session: Mapping[str, Any]) -> list[Advice]:
    """One advice per sequence module called :data:`MIN_CALLS` or more times per step that
    takes :data:`MIN_SHARE` of it or more.

    Example:
        >>> rnn_per_step({"step_ms": {"median": 10.0}, "tree": {"kind": "root"}})
        []
    """
    step = tree_step_ms(session)
    tree = session.get("tree")
    if step <= 0 or not tree:
        return []
    advice = []
    for node, name in named_modules(tree):  # ("gru" named "Enc.gru" beside a "Dec.gru")
        calls = float(node.get("calls_per_step") or 0.0)
        if (str(node.get("type")) not in SEQUENCE_TYPES
                or calls < MIN_CALLS or node_ms(node) < MIN_SHARE * step):  # fmt: skip
            continue
        kind = node.get("type")
        advice.append(Advice(
            rule="rnn-per-step",
            title=f"{name} ({kind}) is called {calls:.3g} times per step: one time step per "
            "call? Pass the whole sequence in one call",
            confidence="low",
            evidence=[
                f"{name} takes {fmt_ms(node_ms(node))} per step, {pct(node_ms(node), step):.0f}% "
                f"of the step, in {calls:.3g} calls",
                f"nn.{kind} runs a whole sequence per call; called this often in one step, it "
                "most likely runs one time step per call from a Python loop (the profile does "
                "not show the calls' sequence lengths, so no saving is stated)",
            ],
            fix=_FIX,
            references=[f"torch.nn.{kind}", "torch.nn.utils.rnn.pack_padded_sequence"],
            code="for t in range(src.size(0)):              # before: one call per token\n"
            "    out, h = self.gru(emb[t].view(1, 1, -1), h)\n"
            "out, h = self.gru(emb.view(src.size(0), 1, -1), h)  # after: the sentence at once",
            heat=min(1.0, node_ms(node) / step),
            cause="rnn-sequence",
        ))
    return advice
