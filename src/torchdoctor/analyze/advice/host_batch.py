"""Rule ``host-batch``: a function of the script assembles each batch on the host, one sample at
a time, and its lines together take a sizable share of the step though none does alone.

nanoGPT's ``get_batch`` slices a NumPy memmap once per row, converts each row and stacks them
(``torch.stack([torch.from_numpy(data[i:i+T].astype(np.int64)) for i in ix])``, twice): each
line is 2-3% of a small CPU step, under the hot-line share, and its Python outside torch calls
is sampled apart (``session["python_lines"]``), so no advice named it while the function took
~9% of the step. The rule adds up, per user function outside any module, the measured lines
whose torch calls build tensors from host data (``from_numpy``, ``stack``, ``tensor``) or that
call into NumPy, and the Python outside torch sampled on those lines: the timed part is the low
end, timed plus sampled the high end (the sampled ticks may fall between two timed calls).

Example:
    >>> line = lambda n, ms: {"file": "/w/train.py", "line": n, "location": f"train.py:{n}",
    ...     "function": "get_batch", "owner": "", "code": "x = torch.stack([...])",
    ...     "total_ms": {"mean": ms}, "forward_ms": {"mean": ms}, "backward_ms": {"mean": 0.0},
    ...     "calls_per_step": 4, "torch_calls_per_step": 12,
    ...     "top_ops": [{"op": "torch.from_numpy", "forward_ms": ms, "calls_per_step": 8}]}
    >>> session = {"step_ms": {"mean": 20.0}, "hot_lines": {"lines": [line(124, 0.6), line(125, 0.6)]},
    ...            "python_lines": [{"file": "/w/train.py", "line": 124, "ms_per_step": 0.9}]}
    >>> [a.title.split(": ")[0] for a in host_batch(session)]
    ['get_batch() (train.py:124) assembles each batch on the host']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, is_cuda, location, pct, tree_step_ms
from torchdoctor.analyze.advice.hot_lines_data import HOT_SHARE, measured_lines
from torchdoctor.session_read import installed_package

#: torch calls that turn host data into tensors, one sample or one batch at a time
HOST_OPS = frozenset({
    "torch.from_numpy", "torch.stack", "torch.tensor", "torch.as_tensor", "torch.cat",
    "Tensor.to", "Tensor.pin_memory", "Tensor.long", "Tensor.int", "Tensor.__index__",
    "torch.device",
})  # fmt: skip
#: packages whose frames under a line mean host data work (NumPy's memmap indexing, pandas)
HOST_PACKAGES = frozenset({"numpy", "pandas", "PIL", "tokenizers", "transformers"})

FIX = (
    "Build the batch in one vectorized step instead of one sample at a time: one gather with a "
    "2-D index (rows = ix[:, None] + np.arange(block_size); data[rows]) and one conversion "
    "(torch.from_numpy(batch.astype(np.int64))), or a Dataset whose __getitem__ returns whole "
    "samples under a DataLoader with num_workers > 0, so batches are made in other processes "
    "while the step runs."
)
#: ... on a GPU run (a CPU run copies nothing to a device)
GPU_FIX = (
    " On a GPU, host work overlaps the step only while the GPU has queued work (nanoGPT calls "
    "get_batch right after the forward for that reason); pin the batch (pin_memory=True) and "
    "copy it with non_blocking=True."
)
CODE = (
    "x = torch.stack([torch.from_numpy(data[i:i+T].astype(np.int64)) for i in ix])  # before\n"
    "rows = ix.numpy()[:, None] + np.arange(T)                                   # after:\n"
    "x = torch.from_numpy(data[rows].astype(np.int64))                           # one gather"
)
#: ... where the lines make tensors of Python lists of samples (torch.tensor(list) and no
#: stack of slices: minimalRL's DQN replay buffer, torch.tensor(s_lst) of 32 arrays of 4, read
#: 'one gather with a 2-D index (... np.arange(block_size) ...)', a language model's fix)
LIST_FIX = (
    "Build the batch from arrays, not from Python lists of samples: torch.tensor of a list of "
    "NumPy arrays converts them one element at a time. Keep the samples in preallocated NumPy "
    "arrays (a replay buffer's states = np.empty((capacity, *obs_shape), np.float32), written "
    "in place) and take a batch with one index array (torch.from_numpy(states[idx])), or turn "
    "the list into one array once (np.asarray(s_lst, np.float32)) before torch.from_numpy; or "
    "a Dataset under a DataLoader with num_workers > 0, so batches are made in other processes."
)
LIST_CODE = (
    "s = torch.tensor(s_lst, dtype=torch.float)           # before: a list of arrays\n"
    "s = torch.from_numpy(np.asarray(s_lst, np.float32))  # after: one array, one conversion"
)


#: torch calls that read host data (not a stack of tensors already made: a post-processing
#: torch.cat of outputs is no host batch)
FROM_HOST = frozenset({"torch.from_numpy", "torch.tensor", "torch.as_tensor", "Tensor.pin_memory"})


def _from_host(row: Mapping[str, Any]) -> bool:
    """The line converts host data: a FROM_HOST call or a NumPy (pandas, ...) frame under it."""
    return any(o.get("op") in FROM_HOST for o in row.get("top_ops") or ()) or any(
        installed_package(str(v.get("file") or "")) in HOST_PACKAGES for v in row.get("via") or ()
    )


def _of_lists(rows: list[dict[str, Any]]) -> bool:
    """The lines make tensors of Python lists (torch.tensor, torch.as_tensor), no stack or
    gather of slices (torch.stack, torch.cat, torch.from_numpy)."""
    ops = {o.get("op") for row in rows for o in row.get("top_ops") or ()}
    return bool(ops & {"torch.tensor", "torch.as_tensor"}) and not (
        ops & {"torch.stack", "torch.cat", "torch.from_numpy"})  # fmt: skip


def _span(low: str, high: str) -> str:
    """``low-high``, or one figure when they are the same (no Python sampled apart).

    Example:
        >>> _span("0.459 ms", "0.459 ms"), _span("6", "9")
        ('0.459 ms', '6-9')
    """
    return low if low == high else f"{low}-{high}"


def _host_line(row: Mapping[str, Any]) -> bool:
    """A measured line outside any module, without backward, whose heaviest torch calls build
    tensors from host data or that calls into NumPy (or pandas, a tokenizer)."""
    if any(row.get("owners") or ()) or float(row.get("backward_ms") or 0.0) > 0.0:
        return False
    ops = row.get("top_ops") or ()
    host_ms = sum(float(o.get("forward_ms") or 0.0) for o in ops if o.get("op") in HOST_OPS)
    heavy = host_ms >= 0.5 * sum(float(o.get("forward_ms") or 0.0) for o in ops) > 0
    return heavy or any(
        installed_package(str(v.get("file") or "")) in HOST_PACKAGES for v in row.get("via") or ()
    )


def host_batch(session: Mapping[str, Any]) -> list[Advice]:
    """One advice per user function whose host-data lines take >= HOT_SHARE of the step
    together, none of them alone (a hot line has advice of its own).

    Example:
        >>> host_batch({})  # (a session without the evidence this rule reads)
        []
    """
    step = tree_step_ms(session)
    if step <= 0:
        return []
    python = list(session.get("python_lines") or ())
    sampled = {(str(r.get("file")), r.get("line")): float(r.get("ms_per_step") or 0.0)
               for r in python}  # fmt: skip
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in measured_lines(session):
        name = str(row.get("function") or "")
        if name and name != "<module>" and not name.startswith("<") and _host_line(row):
            groups.setdefault((row["file"], name), []).append(row)
    advice = []
    for (file, name), rows in groups.items():
        lines = {row["line"] for row in rows}
        # the Python sampled on those lines, and on the function's lines without a torch call
        # (nanoGPT re-creates its np.memmap at every call: ~1 ms, sampled on its own line)
        own = [r for r in python if str(r.get("file")) == file
               and (r.get("line") in lines or r.get("function") == name)]  # fmt: skip
        if any(row["share"] >= HOT_SHARE for row in rows) or len(rows) < 2 and not own or not (
            any(_from_host(row) for row in rows)
        ):
            continue
        timed = sum(float(row["own_ms"]) for row in rows)
        python_ms = sum(float(r.get("ms_per_step") or 0.0) for r in own)
        if timed + python_ms < HOT_SHARE * step:
            continue
        rows.sort(key=lambda r: r["line"])
        where = rows[0]["location"]
        evidence = [
            f"{name}() runs {len(rows)} line(s) that build tensors from host data: "
            f"{fmt_ms(timed)} per step in their torch calls and the Python between them "
            "(timed)" + (f", and {fmt_ms(python_ms)} of Python outside torch in the function "
                         "(sampled)" if python_ms else ""),
            *(f"{row['location']} `{str(row.get('code') or '')[:90]}`: {fmt_ms(row['own_ms'])}"
              + (f" + {fmt_ms(sampled[(file, row['line'])])} sampled"
                 if sampled.get((file, row["line"])) else "")
              + f", {row['calls_per_step']:g} executions per step" for row in rows[:4]),
            *(f"{r.get('location')} `{str(r.get('code') or '')[:90]}`: "
              f"{fmt_ms(float(r.get('ms_per_step') or 0.0))} sampled (no torch call)"
              for r in own if r.get("line") not in lines),
            "none of these lines is hot alone; together they are "
            f"{_span(f'{pct(timed, step):.0f}', f'{pct(timed + python_ms, step):.0f}')}% of the "
            "step",
        ]  # fmt: skip
        advice.append(Advice(
            rule="host-batch",
            title=f"{name}() ({where}) assembles each batch on the host: "
            f"{_span(fmt_ms(timed), fmt_ms(timed + python_ms))} per step ("
            f"{_span(f'{pct(timed, step):.0f}', f'{pct(timed + python_ms, step):.0f}')}%)",
            confidence="medium",
            evidence=evidence,
            fix=(LIST_FIX if _of_lists(rows) else FIX) + (GPU_FIX if is_cuda(session) else ""),
            code=LIST_CODE if _of_lists(rows) else CODE,
            references=["torch.utils.data.DataLoader", "numpy.memmap"],
            estimated_saving_ms=timed / 2,
            saving_range_ms=[timed / 2, timed + python_ms],
            locations=[location(file, line) for line in sorted(
                lines | {r.get("line") for r in own})],
            heat=min(1.0, (timed + python_ms) / step),
        ))  # fmt: skip
    return advice
