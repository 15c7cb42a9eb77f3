"""Rule ``library-loop``: a library's training loop (``trainer.train()``, ``trainer.fit()``),
or its generation loop (``model.generate(...)``, steps cut at model calls), spends a sizable
share of the step between steps in its own Python.

When the user's script hands the loop to a library, the ``other`` phase's ticks all land on the
one user line that started it (``session["other_lines"]`` rows marked ``encloses_loop``), and
"move it out of the loop" would be nonsense. The profiler keeps the library frames of each tick
(``collect/other_chains.py``): the row's ``inside`` lists the loop's own lines with their time
and the innermost frame the time went to. The advice names them; the fix comes from a short
table of options the libraries have for that work (:data:`LIBRARY_REMEDIES`), else says what
is left: the work does not grow with the batch.

Example:
    >>> session = {"step_ms": {"mean": 10.0}, "phases": {"other": {"mean": 3.0}},
    ...     "other_lines": [{"file": "/w/t.py", "line": 9, "location": "t.py:9",
    ...         "code": "trainer.train()", "ms_per_step": 2.0, "encloses_loop": True,
    ...         "inside": [{"file": "/s/site-packages/transformers/trainer.py", "line": 1958,
    ...             "location": "trainer.py:1958", "function": "_run_epoch", "package": "transformers",
    ...             "code": "self._maybe_log_save_evaluate(", "ms_per_step": 1.5, "via": None}]}]}
    >>> [a.title.split(": ")[0] for a in library_loop(session)]
    ['the transformers training loop spends 20% of the step (2 ms) between steps in its own Python']
    >>> library_loop(session)[0].fix.split("): ")[0]
    'For trainer.py:1958 (1.5 ms'

"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, center, fmt_ms, location, pct, tree_step_ms

#: a row taking at least this share of the step is advised
MIN_SHARE = 0.05

#: (package, texts in the loop line's code or its innermost function, the fix); first match
LIBRARY_REMEDIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "transformers",
        ("logging_nan_inf_filter", "is_torch_xla_available"),
        "TrainingArguments(logging_nan_inf_filter=False): the Trainer then skips its per "
        "micro-batch NaN/Inf test of the loss (and the checks around it).",
    ),
    (
        "transformers",
        ("_clip_grad_norm",),
        "The Trainer clips gradients every step (TrainingArguments.max_grad_norm, 1.0 by "
        "default): the norm over all parameters runs between backward and optimizer.step(); "
        "max_grad_norm=0 skips it where the training is stable without clipping (that changes "
        "the training, not only its speed: compare the loss curves).",
    ),
    (
        "transformers",
        ("_maybe_log_save_evaluate",),
        "Raise TrainingArguments(logging_steps=..., eval_steps=..., save_steps=...): between "
        "steps the Trainer gathers, logs, evaluates or saves when these intervals come due.",
    ),
    (
        "lightning",
        ("log_dict", ".log(", "logger_connector", "_LoggerConnector"),
        "Log less often: Trainer(log_every_n_steps=50), or self.log(..., on_step=False) for "
        "values that are only needed per epoch.",
    ),
    (
        "pytorch_lightning",
        ("log_dict", ".log(", "logger_connector", "_LoggerConnector"),
        "Log less often: Trainer(log_every_n_steps=50), or self.log(..., on_step=False) for "
        "values that are only needed per epoch.",
    ),
)
GENERIC_FIX = (
    "This is the library's own work per step, outside the model (the lines above): it does "
    "not grow with the batch, so a larger per-device batch (or fewer, larger steps with "
    "gradient accumulation) makes it a smaller share of each sample; look for the library's "
    "options for the lines named above, and keep the library current."
)


#: the generic fix of an inference loop (steps cut at model calls: ``model.generate``)
INFERENCE_FIX = (
    "This is the library's own work per model call, outside the model (the lines above): it "
    "does not grow with the batch, so more sequences per call make it a smaller share of "
    "each one; look for the library's options for the lines named above, and keep the "
    "library current."
)
#: ... and what Hugging Face generate offers against its per-token Python
GENERATE_FIX = (
    " For model.generate: a static KV cache compiled with the model "
    "(generation_config.cache_implementation='static', then torch.compile the forward) "
    "replaces the per-token cache bookkeeping with one compiled graph."
)


def _loop_words(session: Mapping[str, Any], code: str) -> tuple[str, str]:
    """(what the loop is, what it runs between): a training loop between optimizer steps,
    or, when steps are model calls, a generation or inference loop between calls.

    Example:
        >>> _loop_words({"config": {"step_boundary": "module"}}, "out = model.generate(x)")
        ('generation loop', 'one model call and the next')
    """
    if (session.get("config") or {}).get("step_boundary") != "module":
        return "training loop", "optimizer.step() and the next forward"
    kind = "generation loop" if "generate(" in code else "inference loop"
    return kind, "one model call and the next"


def _remedy(package: str | None, inside: list[Mapping[str, Any]], ms: float,
            generic: str = GENERIC_FIX) -> str:  # fmt: skip
    """The fix: the table's option for each loop line it knows (named with the line and its
    time), then the generic note unless those lines are most of the time."""
    fixes, covered = [], 0.0
    for row in inside:
        via = row.get("via") or {}
        words = f"{row.get('code', '')} {row.get('function', '')} {via.get('function', '')}"
        for name, texts, fix in LIBRARY_REMEDIES:
            if package == name and any(text in words for text in texts):
                line_ms = float(row.get("ms_per_step") or 0.0)
                fixes.append(f"For {row['location']} ({fmt_ms(line_ms)}): {fix}")
                covered += line_ms
                break
    if covered < 0.5 * ms:
        fixes.append(generic)
    return " ".join(fixes)


def library_loop(session: Mapping[str, Any]) -> list[Advice]:
    """One advice per ``other`` line that runs a library's loop and takes >= MIN_SHARE of the
    step (see the module docstring).

    Example:
        >>> row = {"location": "t.py:3", "code": "trainer.fit(m)", "ms_per_step": 5.0,
        ...        "encloses_loop": True, "inside": [{"location": "loop.py:9", "line": 9,
        ...        "file": "/s/site-packages/lightning/loop.py", "function": "advance",
        ...        "code": "self._logger_connector.update()", "ms_per_step": 5.0,
        ...        "package": "lightning", "via": None}]}
        >>> session = {"step_ms": {"mean": 20.0}, "other_lines": [row]}
        >>> library_loop(session)[0].fix.startswith("For loop.py:9 (5 ms): Log less often")
        True
    """
    step = tree_step_ms(session)
    other = center((session.get("phases") or {}).get("other"))
    advice = []
    for row in session.get("other_lines") or ():
        ms = float(row.get("ms_per_step") or 0.0)
        inside = list(row.get("inside") or ())
        if not row.get("encloses_loop") or not inside or step <= 0 or ms < MIN_SHARE * step:
            continue
        package = inside[0].get("package") or "library"
        where = str(row.get("location") or "?")
        loop, between = _loop_words(session, str(row.get("code") or ""))
        evidence = [
            f"{where} `{row.get('code', '')}` runs the {package} {loop}: its work between "
            f"{between} is {fmt_ms(ms)} per step of CPU, sampled in "
            "the detailed steps (other phase "
            f"{fmt_ms(other)}, {pct(other, step):.0f}% of the step)",
        ]
        for line in inside:
            via = line.get("via")
            through = f", through {via['location']} ({via['function']})" if via else ""
            evidence.append(
                f"{line['location']} ({line.get('function')}) `{line.get('code', '')}`: "
                f"{fmt_ms(float(line.get('ms_per_step') or 0.0))} per step{through}"
            )
        generic = GENERIC_FIX if loop == "training loop" else INFERENCE_FIX
        if loop == "generation loop" and package == "transformers":
            generic += GENERATE_FIX
        fix = _remedy(package, inside, ms, generic)
        advice.append(
            Advice(
                rule="library-loop",
                title=f"the {package} {loop} spends {pct(ms, step):.0f}% of the step "
                f"({fmt_ms(ms)}) between steps in its own Python: "
                + ", ".join(f"{line['location']}" for line in inside[:2]),
                estimated_saving_ms=None,
                confidence="medium",
                evidence=evidence,
                fix=fix,
                locations=[location(line.get("file"), line.get("line")) for line in inside],
                heat=min(1.0, ms / step),
            )
        )
    return advice
