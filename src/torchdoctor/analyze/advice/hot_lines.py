"""Rule ``hot-line``: the measured heaviest source lines, one advice per line, with the cure.

Reads the Session's ``hot_lines`` section (``collect/lines.py``): per user source line, its
forward and backward ms per step, executions per step and heaviest torch ops. Each line taking
>= 5% of the step (at most 5 lines) gets one advice naming it as ``file.py:LINE`` with its
measured share. The static findings on the line (``session["lint"]``: TD102 solve in a loop,
TD301 mask per value, TD303 scipy assignment, ...) join it as evidence, and the cure they
call for gives an Amdahl saving over the line's measured time with the replacement's
benchmarked speedup (``hot_lines_cures.py``). Without a finding, the line's heaviest op (a
solve run many times per step) or its shape (many executions of small ops: a per-element
Python loop) chooses the cure; a hot line with no known cure is still named, ranked by its
share. ``Advice.locations`` carries the line, so advice on the same line can be merged.

Example:
    >>> hot_line_advice({"hot_lines": None})
    []
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    CPU_BF16_NOTE,
    Advice,
    center,
    fmt_count,
    fmt_ms,
    location,
    one_step_run,
    same_file,
    tree_step_ms,
)
from torchdoctor.analyze.advice.compiled_lines import COMPILED_FIX, compiled_code
from torchdoctor.analyze.advice.cure import cure_saving
from torchdoctor.analyze.advice.dominant_kinds import attention_parts
from torchdoctor.analyze.advice.hot_lines_cures import (
    CURES_BY_CODE,
    LOOP_CALLS,
    Cure,
    cure_for,
    is_per_element_loop,
    loop_cause,
    saving_note,
)
from torchdoctor.analyze.advice.hot_lines_data import hot_lines, not_sdpa_by_owner, pattern_span
from torchdoctor.analyze.advice.hot_lines_fixes import (
    CONV_NET_HOW,
    CONV_NET_OPS,
    CPU_BF16_ATTENTION,
    FOREACH_OP_FIX,
    FUSED_FIX,
    GRAD_CLIP_FIX,
    MATMUL_FIX,
    OP_HOW,
    SINGLE_OP_FIX,
    SPARSE_COO_FIX,
    SPARSE_FIX,
)
from torchdoctor.analyze.advice.hot_lines_library import library_fix, library_title, library_work
from torchdoctor.analyze.advice.lint_hot import as_finding_dict
from torchdoctor.analyze.advice.lint_loaders import contradicted
from torchdoctor.analyze.advice.slice_cure import UNBIND_ONCE, unattributed_backward
from torchdoctor.analyze.advice.start_up import import_advice, imported_modules

#: module paths named in a line's "inside ..." evidence; the rest are counted
MAX_OWNERS = 3
#: the fix of a hot line no rule knows a cure for; merged with an entry that names a specific
#: remedy for the same line (a known torch sync, a lint finding), that entry's fix wins
NO_CURE_FIX = (
    "Look at this line first: move loop-invariant work out of it, batch what it repeats, or "
    "torch.compile its function; wrap it in torchdoctor.region to follow it across runs."
)


def findings_on(session: Mapping[str, Any], row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The attached lint findings on a measured line.

    Example:
        >>> findings_on({"lint": [{"code": "TD102", "path": "t.py", "line": 3}]},
        ...             {"file": "/x/t.py", "line": 3})[0]["code"]
        'TD102'
    """
    out = []
    for finding in map(as_finding_dict, session.get("lint") or ()):
        if finding.get("line") == row["line"] and same_file(str(finding.get("path")), row["file"]):
            out.append(finding)
    return [f for f in out if not contradicted(f, session)]  # (a backward's cost, none ran)


def _ops_text(row: Mapping[str, Any]) -> str:
    parts = []
    for op in row["top_ops"][:3]:
        split = (f"{fmt_ms(op['forward_ms'])} fwd + {fmt_ms(op['backward_ms'])} bwd"
                 if float(op.get("backward_ms") or 0.0) > 0 else fmt_ms(op["forward_ms"]))  # fmt: skip
        parts.append(f"{op['op']} {split} ({fmt_count(op['calls_per_step'])} calls)")
    return ", ".join(parts)


def _title(row: Mapping[str, Any], share: float, cure: Cure | None) -> str:
    where = row["location"]
    if row.get("called_from") and float(row.get("calls_per_step") or 0.0) >= LOOP_CALLS:
        runs = fmt_count(row["calls_per_step"])
        where += (  # (in a loop of its function: the line runs more often than it is called;
            # char-rnn's char_tensor() read "called 40,000x per step from train.py:43")
            f" (run {runs}x per step in a loop of {row['function']}(), called from "
            f"{row['called_from']})" if row.get("loop_line") is not None and row.get("function")
            else f" (called {runs}x per step from {row['called_from']})")  # fmt: skip
    head = f"{where} takes {100 * share:.0f}% of the step ({fmt_ms(row['own_ms'])})"
    top = row["top_ops"][0]["op"] if row["top_ops"] else None
    loop = is_per_element_loop(row)
    if compiled_code(row) and cure is None:
        return (f"{head}: code torch.compile generated ({fmt_count(row['calls_per_step'])} runs per "
                "step), its time the compiled kernels'")  # fmt: skip
    if cure is not None and cure.name != "batch the loop":
        shape = f"{top} {fmt_count(row['calls_per_step'])}x per step" if loop and top else ""
        return f"{head}{': ' + shape if shape else ''}: {cure.summary}"
    if loop:
        return (
            f"{head}: a per-element Python loop ({fmt_count(row['calls_per_step'])} executions per "
            f"step, {fmt_count(row['torch_calls_per_step'])} small torch calls): batch it"
        )
    if _fused_attention(row):
        return f"{head}: one fused attention kernel, already the fast path"
    if sparse_matmul(row):
        return f"{head}: its time is a sparse matrix multiply ({sparse_matmul(row)})"
    if matmul_bound(row):
        return f"{head}: its time is the matrix multiply ({matmul_bound(row)})"
    package = library_work(row)
    if package:
        return f"{head}: {library_title(row, package)}"
    op = single_op(row)
    if op and op.startswith("torch._foreach_"):
        return f"{head}: one multi-tensor {op} per execution, already batched"
    if op:
        return f"{head}: one {op} per execution, the op's own time"
    return f"{head}: {_HEAVIEST}"


#: the title's end of a hot line with nothing more specific to say: only the heaviest such
#: line is an advice, the others its evidence (mnist_forward_forward: three such items, two
#: of them noise)
_HEAVIEST = "the heaviest measured source line"


def single_op(row: Mapping[str, Any]) -> str | None:
    """The one torch op a line is (``x = F.max_pool2d(x, 2)``: one call, nearly all of its
    time), or None: nothing on such a line to hoist or batch.

    Example:
        >>> single_op({"total_ms": 4.8, "calls_per_step": 1, "torch_calls_per_step": 1,
        ...            "top_ops": [{"op": "F.max_pool2d", "forward_ms": 3.5, "backward_ms": 1.3}]})
        'F.max_pool2d'
    """
    top = (row.get("top_ops") or [None])[0]
    calls = float(row.get("calls_per_step") or 0.0)
    torch_calls = float(row.get("torch_calls_per_step") or 0.0)
    if not top or calls <= 0 or torch_calls > 1.5 * calls:
        return None
    spent = float(top.get("forward_ms") or 0.0) + float(top.get("backward_ms") or 0.0)
    return str(top.get("op")) if spent >= 0.8 * center(row.get("total_ms")) else None


def _fix(row: Mapping[str, Any], cure: Cure | None, cpu_bf16: bool = False) -> str:
    """The line's fix: its cure's, else what the line is (one fused kernel, a framework's
    loop, one op), else the generic pointer (``cpu_bf16``: a CPU run on a CPU with bfloat16
    in hardware, where autocast to bfloat16 pays off there too)."""
    if cure is not None:
        return cure.fix
    if compiled_code(row):
        return COMPILED_FIX
    if _fused_attention(row):
        return FUSED_FIX.replace("(CUDA)", CPU_BF16_ATTENTION) if cpu_bf16 else FUSED_FIX
    if sparse_matmul(row):
        return sparse_fix(str(sparse_matmul(row)))
    if matmul_bound(row):
        return MATMUL_FIX.format(op=matmul_bound(row)) + (CPU_BF16_NOTE if cpu_bf16 else "")
    package = library_work(row)
    if package:
        return library_fix(row, package)
    op = single_op(row)
    if op and op.startswith("torch._foreach_"):
        return FOREACH_OP_FIX.format(op=op)
    if op and op.rsplit(".", 1)[-1] in ("clip_grad_norm_", "clip_grad_value_"):
        return GRAD_CLIP_FIX.format(op=op)
    if not op:
        return NO_CURE_FIX
    conv_net = any(part in op.lower() for part in CONV_NET_OPS)
    how = CONV_NET_HOW if conv_net else OP_HOW
    if "softmax" in op.lower():
        how += "; over a vocabulary: fewer classes, or the loss computed in chunks"
    return SINGLE_OP_FIX.format(op=op, how=how)


def _fused_attention(row: Mapping[str, Any]) -> bool:
    """The line's time is mostly one scaled_dot_product_attention call per execution.

    Example:
        >>> _fused_attention({"total_ms": 1.0, "top_ops": [{"op": "F.scaled_dot_product_attention",
        ...                   "forward_ms": 0.5, "backward_ms": 0.4}]})
        True
    """
    top = (row.get("top_ops") or [None])[0]
    return bool(top) and "scaled_dot_product_attention" in str(top.get("op")) and _mostly(row)


#: torch's matrix multiplies as the hot-lines collector names them
MATMUL_OPS = frozenset(
    f"{prefix}.{name}"
    for prefix in ("torch", "Tensor")
    for name in ("mm", "matmul", "bmm", "addmm", "baddbmm", "einsum", "__matmul__", "__rmatmul__")
) | {"F.linear", "F.bilinear"}

def sparse_matmul(row: Mapping[str, Any]) -> str | None:
    """The matrix multiply with a sparse operand (the collector names it
    ``torch.mm[sparse_coo]``) a line spends >= 70% of its time in, or None.

    Example:
        >>> sparse_matmul({"total_ms": 6.0, "top_ops": [{"op": "torch.mm[sparse_coo]",
        ...                "forward_ms": 5.0, "backward_ms": 0.6}]})
        'torch.mm[sparse_coo]'
    """
    top = (row.get("top_ops") or [None])[0]
    if not top or not _mostly(row):
        return None
    op = str(top.get("op"))
    base, _, layout = op.partition("[")
    return op if layout.startswith("sparse") and base in MATMUL_OPS else None


def sparse_fix(op: str) -> str:
    """The fix for a sparse matrix multiply named ``op`` (its layout: COO or compressed).

    Example:
        >>> "to_sparse_csr()" in sparse_fix("torch.mm[sparse_coo]")
        True
        >>> "to_sparse_csr()" in sparse_fix("torch.mm[sparse_csr]")
        False
    """
    return (SPARSE_COO_FIX if op.endswith("[sparse_coo]") else SPARSE_FIX).format(op=op)


def matmul_bound(row: Mapping[str, Any]) -> str | None:
    """The matrix multiply (``torch.mm``, ``@``, ``F.linear`` ...) a line spends >= 70% of its
    time in, or None.

    Example:
        >>> matmul_bound({"total_ms": 60.0, "top_ops": [{"op": "torch.mm", "forward_ms": 34.0,
        ...               "backward_ms": 22.0}, {"op": "Tensor.add", "forward_ms": 3.0}]})
        'torch.mm'
    """
    top = (row.get("top_ops") or [None])[0]
    return str(top["op"]) if top and str(top.get("op")) in MATMUL_OPS and _mostly(row) else None


def _matmul_cause(row: Mapping[str, Any], attention: frozenset[str] = frozenset()) -> str | None:
    """The cause a matrix-multiply line shares with the dominant-module advice: inside an
    attention module (``attention``: their paths), the fused kernel's (x-transformers'
    ``einsum`` of q and k is the attention SDPA replaces, not a multiply to make cheaper).

    Example:
        >>> row = {"total_ms": 9.0, "owners": ["h.0.attn"], "top_ops": [
        ...     {"op": "torch.einsum", "forward_ms": 8.0}]}
        >>> _matmul_cause(row), _matmul_cause(row, frozenset({"h.0.attn"}))
        ('bf16-autocast', 'sdpa')
    """
    if sparse_matmul(row):
        return "sparse-layout"
    if not matmul_bound(row):
        return None
    owners = [str(o) for o in row.get("owners") or [row.get("owner") or ""]]
    if any(o == a or o.startswith(a + ".") for o in owners for a in attention):
        return "sdpa"
    return "bf16-autocast"


def _mostly(row: Mapping[str, Any]) -> bool:
    """The line's heaviest op takes >= 70% of the line's time."""
    top = row["top_ops"][0]
    spent = float(top.get("forward_ms") or 0.0) + float(top.get("backward_ms") or 0.0)
    return spent >= 0.7 * center(row.get("total_ms"))


def _evidence(
    row: Mapping[str, Any], share: float, findings: list[dict[str, Any]], cure: Cure | None
) -> list[str]:
    function = f" in {row['function']}()" if row.get("function") else ""
    code = f" `{row['code']}`" if row.get("code") else ""
    steps = f", {row['steps']} steps" if row.get("steps") else ""
    owners = sorted({o for o in row["owners"] if o})
    split = (f"{fmt_ms(row['forward_ms'])} forward + {fmt_ms(row['backward_ms'])} backward"
             if float(row.get("backward_ms") or 0.0) > 0 else fmt_ms(row["forward_ms"]))  # fmt: skip
    out = [
        f"{row['location']}{function}{code}: {split} per step = {100 * share:.0f}% of the step "
        f"(measured per line{steps})",
        f"executed {fmt_count(row['calls_per_step'])}x per step, {fmt_count(row['torch_calls_per_step'])} "
        f"torch calls; heaviest: {_ops_text(row) or '-'}",
    ]
    for finding in findings[:3]:
        out.insert(1, f"lint {finding.get('code')} on this line: {finding.get('message')}")
    profiler = float(row.get("profiler_ms") or 0.0)
    if profiler >= 0.1 * float(row.get("total_ms") or 0.0) and profiler > 0:
        out.insert(  # (second: it explains the share the title gives)
            1,
            f"~{fmt_ms(profiler)} of that is the profiler's own cost on the line's "
            f"{fmt_count(row['torch_calls_per_step'])} torch calls (calibrated per call: hot lines and "
            "the sync audit), left out of its share; an unprofiled step spends less here",
        )
    if row.get("called_from"):
        out.append(f"called from {row['called_from']}")
    if owners:  # (a norm's line inside 27 blocks: the first few, and how many)
        shown = ", ".join(owners[:MAX_OWNERS]) + (
            f" and {len(owners) - MAX_OWNERS} more" if len(owners) > MAX_OWNERS else "")
        out.append(f"inside {shown}: refines {'its' if len(owners) == 1 else 'their'} (self) row"
                   f"{'' if len(owners) == 1 else 's'}")  # fmt: skip
    for via in row.get("via")[:1] if row.get("via") else ():
        out.append(
            f"through {os.path.basename(str(via.get('file')))}:{via.get('line')} "
            f"({via.get('function')}), library code called from this line"
        )
    if cure is not None:
        out.append(saving_note(cure))
    return out


def hot_line_advice(session: Mapping[str, Any]) -> list[Advice]:
    """One advice per hot line (see the module docstring), each with ``locations`` set.

    Example:
        >>> row = {"file": "/a/loss.py", "line": 9, "location": "loss.py:9", "owner": "",
        ...        "function": "loss", "code": "d = torch.linalg.solve(c, z[i])",
        ...        "total_ms": {"mean": 6.0}, "forward_ms": {"mean": 4.0},
        ...        "backward_ms": {"mean": 2.0}, "calls_per_step": 64,
        ...        "torch_calls_per_step": 128, "top_ops": [{"op": "torch.linalg.solve",
        ...        "forward_ms": 3.0, "backward_ms": 1.5, "calls_per_step": 64}]}
        >>> advice = hot_line_advice({"step_ms": {"mean": 10.0}, "hot_lines": {"lines": [row]}})
        >>> advice[0].title.split(" takes")[0], round(advice[0].estimated_saving_ms, 2)
        ('loss.py:9', 4.14)
    """
    step = tree_step_ms(session)
    if step <= 0:
        return []
    advice = []
    environment = session.get("environment") or {}
    cpu_bf16 = environment.get("bf16_native") is True and str(
        environment.get("device") or "cpu").startswith("cpu")  # fmt: skip
    tree = session.get("tree")
    not_sdpa = [f"{o}." for o in not_sdpa_by_owner(session)]  # (SDPA cannot compute those)
    paths = [str(p.get("path") or "") for p in (attention_parts(tree) if tree else ())]
    attention = frozenset(p for p in paths if not any(o.startswith(f"{p}.") for o in not_sdpa))
    for row in hot_lines(session):
        share = row["share"]
        if imported_modules(str(row.get("code") or "")):  # start-up, not per-step work
            advice.append(import_advice(row, share, one_step_run(session)))
            continue
        findings = findings_on(session, row)
        cure = cure_for(row, findings)
        item = Advice(
            rule="hot-line",
            title=_title(row, share, cure),
            confidence="high" if cure is not None and cure.name != "batch the loop" else "medium",
            evidence=_evidence(row, share, findings, cure),
            fix=_fix(row, cure, cpu_bf16),
            references=list(
                dict.fromkeys(
                    [str(f.get("code")) for f in findings]
                    + list(cure.references if cure is not None else ())
                )
            ),
            heat=min(1.0, share),
            code=cure.code if cure is not None else None,
            locations=[location(row["file"], row["line"])],
            # the lines of one per-element Python loop are one cause (batching the loop)
            cause=loop_cause(row)
            or (cure.cause if cure is not None else _matmul_cause(row, attention)),
        )
        span = pattern_span(session, row, findings, CURES_BY_CODE) if cure is not None else None
        if span is not None:  # (a cure of a pattern over several lines saves on all of them)
            share = max(share, span["share"])
            item.title = item.title.replace(
                f" takes {100 * row['share']:.0f}% of the step ({fmt_ms(row['own_ms'])})",
                f" and the rest of its pattern (lines {span['lines'][0]}-{span['lines'][-1]}) "
                f"take {100 * share:.0f}% of the step ({fmt_ms(span['total_ms'])})", 1)
            item.locations = [location(row["file"], n) for n in span["lines"]]
            item.evidence.append(f"its pattern spans lines {span['lines'][0]}-{span['lines'][-1]}"
                                 f", measured {fmt_ms(span['total_ms'])} a step: the cure takes "
                                 "all of them")  # fmt: skip
        if cure is not None:
            cure_saving(item, step, share, cure, session)  # (own time:
            # profiler cost left out)
        if cure is not None and cure.name == UNBIND_ONCE.name and item.saving_range_ms:
            sums = unattributed_backward(session, row.get("owners"))
            if item.saving_range_ms[0] + sums > item.saving_range_ms[1]:
                item.saving_range_ms[1] = item.saving_range_ms[0] + sums
                item.evidence.append(
                    f"up to {fmt_ms(item.saving_range_ms[1])} with autograd's sums of the "
                    f"slices' full-size gradients: {fmt_ms(sums)} of the owners' backward no "
                    "measured line holds (the sums run between graph nodes)")
        heaviest = next((a for a in advice if a.title.endswith(_HEAVIEST)), None)
        if heaviest is not None and item.title.endswith(_HEAVIEST):
            heaviest.evidence.append(f"next: {row['location']} `{str(row.get('code'))[:60]}`, "
                                     f"{100 * share:.0f}% of the step")  # fmt: skip
            continue
        advice.append(item)
    return advice
