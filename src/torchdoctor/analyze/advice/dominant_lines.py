"""What the measured source lines inside a dominant part say about its remedy: a part whose
lines call the fused attention kernel already has it; a leaf module whose time is its lines'
matrix multiplies (a hand-written ``GraphConv``: ``torch.mm(x, self.kernel)``) is a matmul,
whatever its class is called.

Example:
    >>> line = {"owner": "gc2", "total_ms": {"mean": 20.0},
    ...         "top_ops": [{"op": "torch.mm", "forward_ms": 12.0, "backward_ms": 6.0}]}
    >>> facts = line_facts({"hot_lines": {"lines": [line]}})
    >>> facts.matmul_ms, sorted(facts.fused)
    ({'gc2': 20.0}, [])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchdoctor.analyze.advice.base import center
from torchdoctor.analyze.advice.hot_lines import findings_on, matmul_bound, sparse_matmul
from torchdoctor.analyze.advice.hot_lines_data import not_sdpa_by_owner

#: a leaf module whose matmul-bound lines hold at least this share of its time is a matmul
MATMUL_SHARE = 0.6


@dataclass(frozen=True)
class LineFacts:
    """``fused``: owners (module paths) of lines calling scaled_dot_product_attention;
    ``matmul_ms``: per owner, the time of its lines whose time is a matrix multiply;
    ``sparse_ms``: the same, of multiplies with a sparse operand (GCN's features and adjacency).

    Example:
        >>> LineFacts(fused=frozenset({"h.0.attn"})).matmul_ms
        {}
    """

    fused: frozenset[str] = frozenset()
    matmul_ms: Mapping[str, float] = field(default_factory=dict)
    sparse_ms: Mapping[str, float] = field(default_factory=dict)
    #: per owner, its measured lines as (location, ms per step)
    lines: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    #: per owner, what ran in its attention that SDPA cannot compute (``hot_lines``'
    #: ``attention_forms``: location, code, what)
    not_sdpa: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    #: per owner with a hand-written attention (lint TD507 on its lines): whether it is masked
    #: (the finding's message says "no mask" when none is applied: SDPA gains less there)
    masked: Mapping[str, bool] = field(default_factory=dict)

    def cpu_attention_speedup(self, paths: Sequence[str]) -> str:
        """The ``SPEEDUPS`` key of fused SDPA on a CPU for the attention inside ``paths``:
        ``"sdpa_unmasked"`` (1.15x-1.26x, measured) when its hand-written attention applies no
        mask, else ``"sdpa_cpu"`` (up to 1.97x: a causal mask's gain). A ViT at 128 tokens took
        the causal bound: 188 ms stated, its attention measured 1.0-1.16x faster fused.

        Example:
            >>> facts = LineFacts(masked={"layers.0.0": False})
            >>> facts.cpu_attention_speedup(["layers"]), facts.cpu_attention_speedup(["head"])
            ('sdpa_unmasked', 'sdpa_cpu')
        """
        inside = [m for owner, m in self.masked.items()
                  if any(owner == p or owner.startswith(p + ".") for p in paths)]  # fmt: skip
        return "sdpa_unmasked" if inside and not any(inside) else "sdpa_cpu"

    def not_sdpa_in(self, paths: Sequence[str]) -> list[Mapping[str, Any]]:
        """The statements that ran inside any of ``paths`` and make its attention other than
        what SDPA computes, one per location.

        Example:
            >>> cog = {"location": "attend.py:562", "what": "`abs()` of the scores"}
            >>> facts = LineFacts(not_sdpa={"enc.layers.0.1.attend": (cog,)})
            >>> [b["location"] for b in facts.not_sdpa_in(["enc"])], facts.not_sdpa_in(["dec"])
            (['attend.py:562'], [])
        """
        found: dict[str, Mapping[str, Any]] = {}
        for owner, blockers in self.not_sdpa.items():
            if any(owner == p or owner.startswith(p + ".") for p in paths):
                for blocker in blockers:
                    found.setdefault(str(blocker.get("location")), blocker)
        return list(found.values())

    def heaviest_in(self, paths: list[str], count: int = 3) -> list[tuple[str, float]]:
        """The heaviest measured lines run inside any of ``paths`` (module paths: the lines of
        a module's forward and of the modules inside it), one entry per location.

        Example:
            >>> facts = LineFacts(lines={"cell": (("m.py:300", 1.4),), "cell.gate": (("m.py:9", 2.0),),
            ...                          "head": (("m.py:40", 9.0),)})
            >>> facts.heaviest_in(["cell"])
            [('m.py:9', 2.0), ('m.py:300', 1.4)]
        """
        spent: dict[str, float] = {}
        for owner, rows in self.lines.items():
            if any(owner == p or owner.startswith(p + ".") for p in paths):
                for where, ms in rows:
                    spent[where] = spent.get(where, 0.0) + ms
        return sorted(spent.items(), key=lambda item: -item[1])[:count]

    def is_sparse_matmul(self, node: Mapping[str, Any], node_ms: float) -> bool:
        """The node's measured lines are mostly matrix multiplies with a sparse operand.

        Example:
            >>> LineFacts(sparse_ms={"gc1": 5.0}).is_sparse_matmul({"path": "gc1"}, 7.4)
            True
        """
        return _holds_share(self.sparse_ms, node, node_ms)

    def is_matmul(self, node: Mapping[str, Any], node_ms: float) -> bool:
        """The node's measured lines are mostly matrix multiplies.

        Example:
            >>> LineFacts(matmul_ms={"gc2": 20.0}).is_matmul({"path": "gc2"}, 26.0)
            True
        """
        return _holds_share(self.matmul_ms, node, node_ms)


def _holds_share(spent_by_owner: Mapping[str, float], node: Mapping[str, Any], node_ms: float) -> bool:
    """The lines counted in ``spent_by_owner`` hold MATMUL_SHARE of the node's time."""
    spent = spent_by_owner.get(str(node.get("path") or ""), 0.0)
    return node_ms > 0 and spent >= MATMUL_SHARE * node_ms


#: a session without measured lines
NO_FACTS = LineFacts()


def line_facts(session: Mapping[str, Any]) -> LineFacts:
    """The :class:`LineFacts` of a session's measured lines (see the module docstring).

    Example:
        >>> line = {"owner": "h.0.attn", "total_ms": 3.0, "top_ops": [
        ...     {"op": "F.scaled_dot_product_attention", "forward_ms": 2.0}]}
        >>> sorted(line_facts({"hot_lines": {"lines": [line]}}).fused)
        ['h.0.attn']
    """
    fused: set[str] = set()
    matmul: dict[str, float] = {}
    sparse: dict[str, float] = {}
    lines: dict[str, list[tuple[str, float]]] = {}
    masked: dict[str, bool] = {}
    for line in (session.get("hot_lines") or {}).get("lines") or ():
        owner = str(line.get("owner") or "")
        if session.get("lint") and line.get("file") and line.get("line") is not None:
            for finding in findings_on(session, line):
                if finding.get("code") == "TD507":
                    message = str(finding.get("message") or "")  # (channels first: its own)
                    unmasked = "no mask" in message and "channels first" not in message
                    masked[owner] = masked.get(owner, False) or not unmasked
        where = line.get("location") or f"{str(line.get('file')).rsplit('/', 1)[-1]}:{line.get('line')}"
        lines.setdefault(owner, []).append((str(where), center(line.get("total_ms"))))
        ops = line.get("top_ops") or ()
        if any("scaled_dot_product_attention" in str(op.get("op")) for op in ops):
            fused.add(owner)
        if ops and matmul_bound(line):
            matmul[owner] = matmul.get(owner, 0.0) + center(line.get("total_ms"))
        if ops and sparse_matmul(line):
            sparse[owner] = sparse.get(owner, 0.0) + center(line.get("total_ms"))
    return LineFacts(
        frozenset(fused),
        matmul,
        sparse,
        {k: tuple(v) for k, v in lines.items()},
        not_sdpa_by_owner(session),
        masked,
    )
