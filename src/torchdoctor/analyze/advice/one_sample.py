"""Rule ``one-sample-per-call``: an inference loop that runs the model on one sample per call.

A loop that calls the model once per item (``clf(text)`` per text, ``model(x.unsqueeze(0))``
per image) pays the per-call costs (Python, the framework's dispatch, on a GPU a launch per
kernel and a device mostly idle) once per sample. Seen in the steps' inputs: no backward, and
the first input of the outermost call has a leading dimension of 1 in nearly every step. The
saving depends on the batch the user can form, so none is stated; the evidence gives a measured
reference (a Hugging Face text-classification pipeline, 4-layer BERT on a CPU: 300 texts one at
a time 1.78-2.03 s, ``clf(texts, batch_size=32)`` 0.94-0.95 s, the same labels).

Example:
    >>> steps = [{"input_shape": [1, 30 + i * 13 % 29], "phases": {}} for i in range(40)]
    >>> [a.rule for a in one_sample_per_call({"steps": steps, "step_ms": {"median": 8.0}})]
    ['one-sample-per-call']
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms
from torchdoctor.analyze.advice.decode_cache import sliding_window
from torchdoctor.session_read import installed_package

#: the fewest steps, and the share of them with a leading dimension of 1, that make it a loop
MIN_STEPS, MIN_SHARE = 20, 0.9

_PIPELINE_FIX = (
    "A Hugging Face pipeline batches for you: pass the list and a batch size, `clf(texts, "
    "batch_size=32)` (or a Dataset / generator for large inputs); it pads each batch and "
    "returns one result per input, in order. On a GPU this matters most: one text per call "
    "leaves the device idle between small kernels."
)
_GENERIC_FIX = (
    "Stack the inputs into batches (a DataLoader with a batch_size, or torch.stack / a "
    "padding collate for variable lengths) and call the model once per batch; keep the results "
    "on the device and split them after the call. On a GPU this matters most: one sample per "
    "call leaves the device idle between small kernels. A sampler whose every call takes the "
    "previous call's output (diffusion denoising steps, a rollout) cannot batch its steps: "
    "batch independent samples instead, several noise tensors as one batch (a diffusers "
    "UNet2DModel at 64x64 on a CPU: 158-199 ms a sample one per call, 148-159 ms in batches "
    "of 4; far more on a GPU)."
)


#: longest over shortest input length past which a batch is mostly padding
LENGTH_SPREAD = 4.0

_SIMILAR_LENGTHS = (
    " Batch inputs of similar length (sort them by length, batch, then restore the order): a "
    "batch pads every input to its longest, and on a CPU, where one row per call keeps the "
    "cores busy anyway, batches of mixed lengths can cost more than they save."
)


def _length_spread(single: list) -> list[str]:
    """Evidence when the one-row inputs ([1, length]: token ids, audio samples) differ in
    length by LENGTH_SPREAD or more (else none): batched as they come, most of each batch is
    padding. A transformers text-classification pipeline over texts of 8 to 160 words (10 to
    162 tokens) on a CPU took 15.2-16.6 s of CPU time with batch_size=32, 14.8-14.9 s one by one.

    Example:
        >>> _length_spread([[1, 10], [1, 162], [1, 42]])[0][:40]
        'their lengths run from 10 to 162: a batc'
        >>> _length_spread([[1, 40], [1, 52]]), _length_spread([[1, 3, 8, 8], [1, 3, 64, 64]])
        ([], [])
    """
    lengths = [shape[1] for shape in single if len(shape) == 2 and shape[1] > 0]
    if not lengths or max(lengths) < LENGTH_SPREAD * min(lengths):
        return []
    return [
        f"their lengths run from {min(lengths)} to {max(lengths)}: a batch of them as they "
        "come pads each to the longest (measured: a text-classification pipeline over 10- to "
        "162-token texts on a CPU, batch_size=32 15.2-16.6 s of CPU time, one by one 14.8-14.9 s)"
    ]


def one_sample_per_call(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when an inference loop's model input has a leading dimension of 1 in nearly
    every step.

    Example:
        >>> steps = [{"input_shape": [8, 30], "phases": {"backward": 0.0}}] * 40
        >>> one_sample_per_call({"steps": steps})
        []
    """
    steps = list(session.get("steps") or ())
    shapes = [s.get("input_shape") for s in steps if s.get("input_shape")]
    if len(shapes) < MIN_STEPS or any(
        float((s.get("phases") or {}).get("backward") or 0.0) > 0 for s in steps
    ):
        return []
    lead = {shape[0] for shape in shapes if len(shape) >= 2}  # (beam search of one prompt:
    if lead and 1 < min(lead) and max(lead) <= BEAM_ROWS and _decoding(shapes):  # [4, length],
        # told apart from 4 prompts by its calls' arguments)
        if any(_BEAMS.search(str(r.get("code") or "")) for r in session.get("call_lines") or ()):
            return _sequences_one_at_a_time(session, shapes)
        return []
    # (a 1-D input is one sample unbatched: a policy given one observation's 4 features)
    single = [shape for shape in shapes if shape and (shape[0] == 1 or len(shape) == 1)]
    ones, phase, of = len(single), "", len(shapes)
    step = (session.get("step_ms") or {}).get("median")
    if ones < MIN_SHARE * len(shapes):
        run = _one_row_phase(steps)
        if run is None:
            return []
        first, single, step = run
        ones, shapes = len(single), single
        phase = f" (steps {first + 1} to {first + ones}, in a row, after batched ones)"
    if _decoding(shapes):
        return _sequences_one_at_a_time(session, shapes)
    texts = sorted({
        f"[{shape[0]}] (one sample, unbatched)" if len(shape) == 1
        else f"[1, {', '.join(map(str, shape[1:]))}]" for shape in single
    })  # fmt: skip
    shape_text = texts[0] if len(texts) == 1 else f"[1, ...] ({len(texts)} different shapes)"
    evidence = [f"the model's input is {shape_text} in {ones} of {of} steps{phase}: "
                "one sample per call, no backward"]  # fmt: skip
    if isinstance(step, (int, float)) and step > 0:
        evidence.append(f"{fmt_ms(step)} per call, {1000.0 / step:.0f} samples per second")
    line = _call_line(session, "calls_per_step" if phase else "ms_per_step")  # (in a phase
    # after batched calls, the line called most often: the heaviest may be the batches')
    pipeline = _through_a_pipeline(session)
    if line is not None:
        evidence.append(f"the calls come from {line.get('location')} `{line.get('code')}`")
    evidence.append(
        "measured elsewhere: a Hugging Face text-classification pipeline (4-layer BERT, CPU), "
        "300 texts one at a time 1.78-2.03 s, batch_size=32 0.94-0.95 s"
    )
    spread = _length_spread(single)
    advice = Advice(
        rule="one-sample-per-call",
        title="The model runs one sample per call: batch the inputs",
        confidence="medium",
        evidence=evidence + spread,
        fix=(_PIPELINE_FIX if pipeline else _GENERIC_FIX) + (_SIMILAR_LENGTHS if spread else ""),
        references=["torch.utils.data.DataLoader"],
        code=(
            'labels = [clf(t)[0]["label"] for t in texts]                     # before\n'
            'labels = [r["label"] for r in clf(texts, batch_size=32)]         # after'
            if pipeline else
            "outputs = [model(x.unsqueeze(0)) for x in samples]   # before: one per call\n"
            "outputs = torch.cat([model(b) for b in torch.stack(samples).split(32)])  # after"
        ),  # fmt: skip
    )
    if line is not None and line.get("file") and line.get("line"):
        advice.locations = [f"{line['file']}:{line['line']}"]
    advice.heat = 0.5
    return [advice]


#: the share of all steps' time a phase of one-row steps takes, at least, to be advised (the
#: semantic search below: 20 queries 19% of it; batched, they would take one call of ~30 ms)
PHASE_SHARE = 0.1


def _one_row_phase(steps: list[Mapping[str, Any]]) -> tuple[int, list, float] | None:
    """The longest run of >= MIN_STEPS one-row steps in a row, as (its first step's index
    among the shaped steps, their shapes, their median ms), where it takes >= PHASE_SHARE of
    all steps' time
    (sentence-transformers' semantic search: 11 batched steps encode the corpus, then 20
    queries one call each, unadvised at 20 of 31 steps); else None.

    Example:
        >>> batched = [{"input_shape": [32, 40], "wall_ms": 9.0}] * 11
        >>> queries = [{"input_shape": [1, 12], "wall_ms": 3.0}] * 20
        >>> _one_row_phase(batched + queries)[0], _one_row_phase(queries[:5] + batched)
        (11, None)
    """
    shaped = [s for s in steps if s.get("input_shape")]
    best: tuple[int, int] = (0, 0)
    start = None
    for i, step in enumerate([*shaped, {"input_shape": [2, 2]}]):  # (a sentinel ends a run)
        shape = step["input_shape"]
        if shape[0] == 1 or len(shape) == 1:
            start = i if start is None else start
            continue
        if start is not None and i - start > best[1] - best[0]:
            best = (start, i)
        start = None
    if best[1] - best[0] < MIN_STEPS:
        return None
    total = sum(float(s.get("wall_ms") or 0.0) for s in shaped)
    part = sum(float(s.get("wall_ms") or 0.0) for s in shaped[best[0]:best[1]])
    if total > 0 and part < PHASE_SHARE * total:
        return None
    run = shaped[best[0] : best[1]]
    return best[0], [s["input_shape"] for s in run], statistics.median(
        float(s.get("wall_ms") or 0.0) for s in run)


#: rows per decoding call that are still one prompt's (its beams, its sampled sequences):
#: HF generate(num_beams=4) runs [4, length] per step for a single prompt
BEAM_ROWS = 8
#: a generate() call whose rows are one prompt's: beams, or several sampled sequences
_BEAMS = re.compile(r"\b(num_beams|num_return_sequences)\s*=")


def _sequences_one_at_a_time(
    session: Mapping[str, Any], shapes: list[list[int]]
) -> list[Advice]:
    """Advice when a decoding loop of batch 1 generates several sequences one after another:
    the sequence length falls back to a prompt's (a new sequence starts) at least once.

    Example:
        >>> steps = [{"input_shape": [1, n], "phases": {}} for _ in range(3)
        ...          for n in range(1, 30)]
        >>> [a.title[:48] for a in one_sample_per_call({"steps": steps})]
        ['3 sequences were generated one after another, on']
        >>> beams = [{"input_shape": [4, n], "phases": {}} for _ in range(3) for n in range(1, 30)]
        >>> line = {"code": "out = model.generate(ids, num_beams=4)", "ms_per_step": 1.0}
        >>> [a.title[46:90] for a in one_sample_per_call({"steps": beams, "call_lines": [line]})]
        ["4 rows per call (one prompt's beams or sampl"]
    """
    rows = [shape for shape in shapes if len(shape) >= 2]
    lead = [shape[0] for shape in rows]  # (one prompt: 1 row, or its beams / samples)
    if len(rows) < len(shapes) or max(lead) > BEAM_ROWS or (1 in lead and len(set(lead)) > 1):
        return []
    widths = sorted(set(lead))
    width = str(widths[0]) if len(widths) == 1 else f"{widths[0]} to {widths[-1]}"
    if sum(1 for shape in rows if shape[1] == 1) > len(rows) / 2:
        # a KV cache: each sequence is one call on its prompt, then one per new token
        count = sum(1 for shape in rows if shape[1] > 1) + (rows[0][1] == 1)
    else:  # the whole sequence each call: its length falls back when a new one starts
        count = 1 + sum(1 for before, now in zip(rows, rows[1:]) if now[1] < before[1])
    if count < 2:
        return []
    line = _call_line(session)
    rows_text = ("one row ([1, length])" if width == "1" else
                 f"{width} rows ([rows, length]: one prompt's beams or samples)")  # fmt: skip
    evidence = [
        f"the model's input is {rows_text} in {len(shapes)} of {len(shapes)} steps, "
        f"decoded token by token: {count} sequences one after another (a new one starts where "
        "the length falls back to a prompt's)",
    ]
    if line is not None:
        evidence.append(f"the calls come from {line.get('location')} `{line.get('code')}`")
    advice = Advice(
        rule="one-sample-per-call",
        title=f"{count} sequences were generated one after another, "
        + ("one row per call" if width == "1" else f"{width} rows per call (one prompt's beams "
           "or samples)") + ": generate them as one batch",  # fmt: skip
        confidence="medium",
        evidence=evidence,
        fix="Generate the sequences as one batch: stack their inputs (the prompts' token ids; "
        "an encoder-decoder's source, such as Whisper's input_features of several clips; the "
        "same prompt n times: idx.repeat(n, 1)) and run the generation loop once for all of "
        "them: each decoding step's forward then runs n rows for about the cost of one on a "
        "GPU, and sampling treats each row on its own. Sequences that end at different lengths "
        "need padding and a finished mask; Hugging Face generate does both (a decoder-only "
        'model wants its prompts padded on the left: tokenizer.padding_side = "left", with '
        "attention_mask), and a pipeline batches with pipe(inputs, batch_size=8).",
        references=["torch.Tensor.repeat"],
        code="outs = [model.generate(x) for x in inputs]   # before: one sequence per call\n"
        "outs = model.generate(torch.cat(inputs))       # after: n rows at once (padded alike)",
    )
    if line is not None and line.get("file") and line.get("line"):
        advice.locations = [f"{line['file']}:{line['line']}"]
    advice.heat = 0.4
    return [advice]


def _decoding(shapes: list[list[int]]) -> bool:
    """Token-by-token generation of one sequence, not one sample per call: the input is one new
    token (``[1, 1]``, a KV cache) or one token longer than the step before (no cache:
    ``decode-without-cache``'s) in at least half the steps, or the sequence grows so up to a
    window and is then cropped to it (nanoGPT's ``generate`` past ``block_size``:
    ``decode_cache.sliding_window``).

    Example:
        >>> _decoding([[1, 1]] * 30), _decoding([[1, 10 + i] for i in range(30)])
        (True, True)
        >>> _decoding([[1, n] for n in range(1, 9)] + [[1, 8]] * 30)  # cropped to 8 tokens
        True
        >>> _decoding([[1, 10 + i * 13 % 29] for i in range(30)])  # (texts of any length)
        False
    """
    steps = sum(
        1 for before, now in zip(shapes, shapes[1:])
        if list(now[1:]) == [1] or (len(now) == len(before) == 2 and now[1] == before[1] + 1)
    )  # fmt: skip
    if steps >= 0.5 * max(1, len(shapes) - 1):
        return True
    return sliding_window(list(zip(shapes, shapes[1:]))) is not None


def _call_line(session: Mapping[str, Any], by: str = "ms_per_step") -> Mapping[str, Any] | None:
    """The user line the model's calls ran under the most (``call_lines``, by ``by``)."""
    rows = list(session.get("call_lines") or ())
    return max(rows, key=lambda r: float(r.get(by) or 0.0)) if rows else None


def _through_a_pipeline(session: Mapping[str, Any]) -> bool:
    """The work between calls ran in a Hugging Face pipeline's code (its pre- and
    post-processing: ``other_lines``' library rows under ``transformers/pipelines/``).

    Example:
        >>> row = {"inside": [{"file": "/v/site-packages/transformers/pipelines/base.py"}]}
        >>> _through_a_pipeline({"other_lines": [row]}), _through_a_pipeline({})
        (True, False)
    """
    for row in session.get("other_lines") or ():
        for frame in [*(row.get("inside") or ()), *(row.get("via") or ())]:
            path = str(frame.get("file") or "").replace("\\", "/")
            if installed_package(path) == "transformers" and "/pipelines/" in path:
                return True
    return False
