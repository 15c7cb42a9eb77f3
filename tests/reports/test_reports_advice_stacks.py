"""Stacks of identical layers as the dominant-module rule sees them: an nn.Sequential model's
own items, and the blocks of a ModuleList of ModuleLists that never run as modules."""

from __future__ import annotations

from reports_sessions import node, s

from torchdoctor.analyze.advice.dominant import dominant_module


def test_a_sequential_models_own_items_are_labelled_as_a_stack_of_it():
    """FSDP2 over nn.Sequential(block, block, block, block, head): its blocks read
    "FSDPSequential.0..3"; the stack is "FSDPSequential[0-3]", as "h[0-3]" in a GPT."""
    from torchdoctor.analyze.advice.dominant_stacks import candidates

    def block(i):
        return {"path": str(i), "name": str(i), "kind": "module", "type": "Sequential",
                "total_ms": {"mean": 22.0}, "params": 1000,
                "children": [{"path": f"{i}.0", "kind": "module", "type": "Linear"}]}  # fmt: skip
    model = {"path": "FSDPSequential", "name": "FSDPSequential", "kind": "module",
             "type": "FSDPSequential", "total_ms": {"mean": 95.0},
             "children": [block(i) for i in range(4)]}  # fmt: skip
    tree = {"kind": "root", "path": "", "total_ms": {"mean": 100.0}, "children": [model]}
    assert [label for _, label, _ in candidates(tree, 100.0, 0.3, 0.8)] == ["FSDPSequential[0-3]"]


def test_a_module_list_of_module_lists_is_a_stack_of_its_blocks():
    """lucidrains' `for attn, ff in self.layers` (FT-Transformer, vit-pytorch): the blocks
    `layers.{i}` never run, so their parts alternate under the parent and no stack was seen."""
    from torchdoctor.analyze.advice.dominant_stacks import candidates

    def part(i, j, kind):
        return {**node(f"t.layers.{i}.{j}", 6.0, 9.0, type=kind), "params": 100 + j}
    parts = [part(i, j, k) for i in range(6) for j, k in enumerate(("Attn", "FF"))]
    model = node("t", 90.0, 0.0, type="Transformer", children=parts)
    root = node("", 90.0, 0.0, kind="root", children=[model])
    root["total_ms"] = s(95.0)
    [(block, label, layers)] = candidates(root, 95.0, 0.3, 0.8)
    assert label == "t.layers[0-5]" and len(layers) == 6 and block is model
    assert layers[0]["type"] == "Attn + FF" and layers[0]["params"] == 201
    (item,) = dominant_module({"step_ms": s(95.0), "tree": root})
    assert "6 identical Attn + FF layers" in item.evidence[1]
    odd = [part(i, j, "FF" if (i, j) == (3, 0) else k) for i in range(6)
           for j, k in enumerate(("Attn", "FF"))]  # (one block unlike the others: no stack of 6)
    assert all(len(g or ()) != 6 for _, _, g in candidates(
        {**root, "children": [{**model, "children": odd}]}, 95.0, 0.3, 0.8))  # fmt: skip
