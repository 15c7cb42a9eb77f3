"""A hot line that is one fused attention kernel or its matrix multiply is told so, not to
"look at this line"."""

from reports_sessions import slow_session

from torchdoctor.analyze.advice.hot_lines import NO_CURE_FIX, hot_line_advice


def _session(op):
    session = slow_session()
    session["hot_lines"] = {"steps": 5, "lines": [{
        "file": "/x/model.py", "line": 64, "location": "model.py:64", "function": "forward",
        "function_line": 52, "code": "y = F.scaled_dot_product_attention(q, k, v, is_causal=True)",
        "owner": "h.0.attn", "owner_kind": "module", "forward_ms": {"mean": 12.0},
        "backward_ms": {"mean": 10.0}, "total_ms": {"mean": 22.0}, "calls_per_step": 2.0,
        "torch_calls_per_step": 2.0, "top_ops": [{"op": op, "forward_ms": 11.0,
        "backward_ms": 10.0, "calls_per_step": 2.0}]}]}  # fmt: skip
    return session


def test_a_line_that_is_one_fused_attention_kernel_gets_the_kernels_remedies():
    (item,) = hot_line_advice(_session("F.scaled_dot_product_attention"))
    assert item.title.endswith("one fused attention kernel, already the fast path")
    assert "already the fused kernel" in item.fix and "bf16" in item.fix
    assert "autocast('cpu'" not in item.fix  # (a CPU without bfloat16 in hardware)
    session = _session("F.scaled_dot_product_attention")
    session["environment"] = {**session.get("environment", {}), "device": "cpu",
                              "bf16_native": True}  # fmt: skip
    (native,) = hot_line_advice(session)
    assert "torch.autocast('cpu', dtype=torch.bfloat16)" in native.fix


def test_another_single_op_is_told_it_is_the_ops_own_time():
    (item,) = hot_line_advice(_session("Tensor.softmax"))
    assert item.title.endswith("one Tensor.softmax per execution, the op's own time")
    assert item.fix.startswith("The line is one Tensor.softmax call")
    assert "channels_last" not in item.fix and "loss computed in chunks" in item.fix
    (pool,) = hot_line_advice(_session("F.max_pool2d"))  # a conv net's op: its layout matters
    assert "channels_last" in pool.fix and "chunks" not in pool.fix


def test_a_multi_tensor_op_is_told_it_is_batched_already_and_to_run_less_often():
    """timm's ModelEmaV3: one torch._foreach_lerp_ over every parameter per step (20 ms of a
    365 ms ResNet-18 step on a CPU); "channels_last or bf16" would not apply."""
    (item,) = hot_line_advice(_session("torch._foreach_lerp_"))
    assert item.title.endswith("one multi-tensor torch._foreach_lerp_ per execution, already batched")
    assert "decay**N" in item.fix and "channels_last" not in item.fix


def test_a_line_of_several_ops_keeps_the_generic_pointer():
    session = _session("Tensor.softmax")
    session["hot_lines"]["lines"][0]["torch_calls_per_step"] = 8.0
    (item,) = hot_line_advice(session)
    assert item.fix == NO_CURE_FIX


def test_a_line_whose_time_is_its_matmul_is_told_to_make_the_multiply_cheaper():
    session = _session("torch.mm")
    session["hot_lines"]["lines"][0]["torch_calls_per_step"] = 6.0  # + an add and an unsqueeze
    (item,) = hot_line_advice(session)
    assert item.title.endswith("its time is the matrix multiply (torch.mm)")
    assert "not make it faster" in item.fix and "autocast" in item.fix
    assert item.cause == "bf16-autocast"  # one advice with the autocast knob's, when measured
    session["hot_lines"]["lines"][0]["top_ops"][0].update(forward_ms=4.0, backward_ms=3.0)
    (other,) = hot_line_advice(session)  # 7 of 22 ms: the rest of the line matters
    assert other.fix == NO_CURE_FIX


def test_a_matmul_line_on_a_cpu_with_bf16_in_hardware_is_told_to_autocast_there():
    """pytorch/examples mnist_forward_forward on an AVX512-BF16 CPU: 81% of the step one
    10,000 x 784 x 500 multiply, 74 ms in float32 and 25 ms under CPU autocast; the fix said
    'on a GPU run it in bf16'."""
    session = _session("torch.mm")
    session["environment"] = {"device": "cpu", "bf16_native": True}
    (item,) = hot_line_advice(session)
    assert "torch.autocast('cpu', dtype=torch.bfloat16)" in item.fix
    for environment in ({"device": "cpu", "bf16_native": False},
                        {"device": "cuda:0 NVIDIA H100", "bf16_native": True}):  # fmt: skip
        session["environment"] = environment
        (item,) = hot_line_advice(session)
        assert "autocast('cpu'" not in item.fix


def test_an_import_line_is_start_up_not_a_librarys_work_per_step():
    """pytorch/examples mnist crashing before its first step (no data): the whole run was one
    step and `from torchvision import datasets` 96% of it, advised as "torchvision's own work
    per step"; it runs once per process."""
    session = _session("torch._cuda_version")
    row = session["hot_lines"]["lines"][0]
    row.update(code="from torchvision import datasets, transforms", owner="", function="<module>",
               via=[{"ms": 11.5, "file": "/env/site-packages/torchvision/ops/x.py", "line": 3}])
    session["config"] = {**session.get("config", {}), "step_boundary": "whole_run"}
    (item,) = hot_line_advice(session)
    assert "importing torchvision, once per process" in item.title and "of the run" in item.title
    assert "own work per step" not in item.title and item.estimated_saving_ms is None
    assert "no step boundary was seen" in " ".join(item.evidence)
    session["config"]["step_boundary"] = "optimizer"  # (an import inside the loop's function)
    (item,) = hot_line_advice(session)
    assert "of the step" in item.title and "no step boundary" not in " ".join(item.evidence)
    row["code"] = "x = torch.relu(x)"  # (not an import: the rule's usual advice)
    assert "importing" not in hot_line_advice(session)[0].title


def test_gradient_clipping_is_told_what_it_is_with_no_forward_and_backward_split():
    """nanoGPT's clip_grad_norm_ line read "0.456 ms forward + 0 ms backward" and was told to
    use bf16 autocast or compile it, neither of which touches gradient clipping."""
    session = _session("torch.nn.utils.clip_grad_norm_")
    row = session["hot_lines"]["lines"][0]
    row["backward_ms"], row["total_ms"] = {"mean": 0.0}, {"mean": 12.0}
    row["top_ops"][0]["backward_ms"] = 0.0
    (item,) = hot_line_advice(session)
    assert "foreach=True" in item.fix and "autocast" not in item.fix
    assert "forward +" not in item.evidence[0] and "per step" in item.evidence[0]
    assert not any("bwd" in e for e in item.evidence)
