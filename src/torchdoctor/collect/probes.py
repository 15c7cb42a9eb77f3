"""The probes run when the profiler stops, after its hooks are gone: the unfused attention calls
timed both ways (``attention_probe.py``) and the dense embedding gradients timed against sparse
ones (``embedding_probe.py``), within one time budget; never after a crash or an interrupt, and
never at the session's expense.

Example:
    >>> from types import SimpleNamespace
    >>> rec = SimpleNamespace(attention_calls={}, embedding_calls={}, embedding_weights={})
    >>> state = SimpleNamespace(interrupted=False, notes=[])
    >>> probe_module_calls(rec, state, run_s=1.0)
    >>> state.notes
    []
"""

from __future__ import annotations

from typing import Any

from torchdoctor.collect.attention_probe import probe_attention, probe_budget
from torchdoctor.collect.embedding_probe import probe_embeddings


def probe_module_calls(rec: Any, state: Any, run_s: float) -> None:
    """Run the probes on what the recorder noted (``rec``), within a budget from the run's
    length (``run_s``); a probe that fails leaves a note in ``state``, no measured saving."""
    if state.interrupted or not (rec.attention_calls or rec.embedding_calls):
        probe_embeddings(rec.embedding_calls, rec.embedding_weights, 0.0)  # (times nothing:
        return  # its notes settled for the session, the weights released)
    try:
        budget = probe_budget(run_s)
        probe_attention(rec.attention_calls, budget)
        probe_embeddings(rec.embedding_calls, rec.embedding_weights, budget)
    except (Exception, KeyboardInterrupt) as error:  # (never worth the session)
        rec.embedding_weights.clear()
        state.notes.append(f"the attention / embedding probe stopped ({type(error).__name__}: "
                           f"{error}); the advice states no measured saving for it")
