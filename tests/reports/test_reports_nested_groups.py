"""Repeated layers inside repeated layers (stages of identical blocks, torchvision's ResNet in
pytorch/examples' siamese_network): both levels fold into groups, and the report renders."""

import re

from torchdoctor.analyze.tree import group_repeated_siblings


def _node(path, type_name, ms, children=()):
    return {"path": path, "name": path.rsplit(".", 1)[-1], "kind": "module", "type": type_name,
            "calls_per_step": 1.0, "total_ms": {"mean": ms, "median": ms},
            "forward_ms": {"mean": ms, "median": ms}, "children": list(children)}  # fmt: skip


def _tree():
    stages = [
        _node(f"stages.{i}", "Stage", 4.0,
              [_node(f"stages.{i}.{j}", "Block", 2.0) for j in range(2)])
        for i in range(3)
    ]  # fmt: skip
    return {"path": "", "name": "step", "kind": "root", "total_ms": {"mean": 12.0},
            "children": stages}  # fmt: skip


def test_a_group_inside_each_member_of_a_group_keeps_its_count():
    (outer,) = group_repeated_siblings(_tree())["children"]
    assert outer["kind"] == "group" and outer["group_count"] == 3
    inner = outer["children"]  # each stage's own group of blocks (stages.0[0-1], ...)
    assert [g["kind"] for g in inner] == ["group"] * 3
    assert [(g["group_count"], g["per_item_ms"]) for g in inner] == [(2, 2.0)] * 3


def test_the_console_tree_renders_nested_groups():
    from torchdoctor.render.console import render_console
    from torchdoctor.session import empty_session_dict

    session = empty_session_dict()
    session["tree"] = _tree()
    session["step_ms"] = {"mean": 12.0, "median": 12.0}
    text = render_console(session, width=120)
    assert "stages[0-2]  (3 x ~4 ms)" in text and "(2 x ~2 ms)" in text


def test_attributes_numbered_by_hand_fold_only_with_one_parameter_count():
    """pytorch/examples fast_neural_style's TransformerNet has res1 .. res5 (ResidualBlock,
    one shape) between conv1 .. conv3 (three shapes): the blocks fold, the convolutions not."""

    def member(path, type_name, params):
        return {**_node(path, type_name, 2.0), "params": params}

    convs = [member("conv1", "ConvLayer", 7808), member("conv2", "ConvLayer", 18496),
             member("conv3", "ConvLayer", 73856)]  # fmt: skip
    blocks = [member(f"res{i}", "ResidualBlock", 295680) for i in range(1, 6)]
    unknown = [_node(f"head{i}", "Linear", 1.0) for i in range(1, 3)]  # (no count: no fold)
    tree = {"path": "", "kind": "root", "children": convs + blocks + unknown}
    paths = [c["path"] for c in group_repeated_siblings(tree)["children"]]
    assert paths == ["conv1", "conv2", "conv3", "res[1-5]", "head1", "head2"]


def test_items_of_lists_never_called_are_named_by_their_path_below_the_parent_row():
    """diffusers' UNet2DModel runs down_blocks.0 and up_blocks.0 (ModuleLists, never called
    themselves): both rows read `0` under the UNet until they were named by their path."""
    from torchdoctor.render.console import render_console
    from torchdoctor.session import empty_session_dict

    down = _node("down_blocks.0", "DownBlock2D", 5.0, [_node("down_blocks.0.resnets.0", "Res", 4.0)])
    up = _node("up_blocks.0", "UpBlock2D", 5.0, [_node("up_blocks.0.attentions.0", "Attn", 4.0)])
    unet = {**_node("UNet2DModel", "UNet2DModel", 12.0, [down, up]), "name": "UNet2DModel"}
    session = empty_session_dict()
    session["tree"] = {"path": "", "name": "step", "kind": "root", "total_ms": {"mean": 12.0},
                       "children": [unet]}  # fmt: skip
    session["step_ms"] = {"mean": 12.0, "median": 12.0}
    rows = re.findall(r"[├└]─ (\S+)", render_console(session, width=120))
    assert {"down_blocks.0", "up_blocks.0", "resnets.0", "attentions.0"} <= set(rows)
    assert "0" not in rows


def test_a_groups_children_that_are_list_items_keep_the_lists_name():
    """T5's blocks hold their sublayers in a ModuleList `layer` that is never called: under the
    group block[0-1] the rows read layer.0 and layer.1 (were 0 and 1), one row per sublayer."""
    from torchdoctor.render.console import render_console
    from torchdoctor.session import empty_session_dict

    blocks = [
        _node(f"encoder.block.{i}", "T5Block", 4.0,
              [_node(f"encoder.block.{i}.layer.{j}", f"Sub{j}", 2.0) for j in range(2)])
        for i in range(2)
    ]  # fmt: skip
    tree = {"path": "", "name": "step", "kind": "root", "total_ms": {"mean": 8.0},
            "children": blocks}  # fmt: skip
    (group,) = group_repeated_siblings(tree)["children"]
    assert [c["path"] for c in group["children"]] == [
        "encoder.block[0-1].layer.0", "encoder.block[0-1].layer.1"]
    assert [c["type"] for c in group["children"]] == ["Sub0", "Sub1"]
    session = empty_session_dict()
    session["tree"] = tree
    session["step_ms"] = {"mean": 8.0, "median": 8.0}
    text = render_console(session, width=120)
    assert "├─ layer.0 " in text and "└─ layer.1 " in text, text
