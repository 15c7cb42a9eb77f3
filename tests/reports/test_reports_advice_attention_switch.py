"""A library's own fused-attention switch, left off, is what the attention advice names: the
profiler notes it on the module that holds it (``attention_switch``, read when the module is
first seen), and the fix says where the library turns it on (x-transformers' ``attn_flash=True``
was told "replace hand-written softmax(QK^T)V", in the library's code)."""

from __future__ import annotations

import sys
import textwrap
import types

import torch
from reports_sessions import node

import torchdoctor
from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.dominant import dominant_module
from torchdoctor.collect.engine_state import attention_switch

ATTEND = textwrap.dedent('''
    import torch

    class Attend(torch.nn.Module):
        def __init__(self, flash=False):
            super().__init__()
            self.flash = flash

        def forward(self, q, k, v):
            if self.flash:
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)
            weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
            return weights @ v

    class Attention(torch.nn.Module):
        def __init__(self, dim, flash=False):
            super().__init__()
            self.qkv = torch.nn.Linear(dim, 3 * dim)
            self.attend = Attend(flash)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return self.attend(q, k, v)

    class Decoder(torch.nn.Module):
        def __init__(self, dim, depth, attn_flash=False):
            super().__init__()
            self.layers = torch.nn.ModuleList(Attention(dim, attn_flash) for _ in range(depth))

        def forward(self, x):
            for layer in self.layers:
                x = x + layer(x)
            return x
''')


def _library(tmp_path, monkeypatch):
    package = tmp_path / "x_transformers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "attend.py").write_text(ATTEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "x_transformers", raising=False)
    monkeypatch.delitem(sys.modules, "x_transformers.attend", raising=False)
    from x_transformers.attend import Decoder

    return Decoder


def _profile(model):
    x = torch.randn(4, 256, 32)
    with torchdoctor.Profiler(syncs=False) as prof:
        for _ in range(3):
            model(x).sum().backward()
            prof.step()
    return prof.session


def test_x_transformers_attention_with_flash_off_is_told_its_attn_flash_switch(tmp_path, monkeypatch):
    decoder = _library(tmp_path, monkeypatch)
    session = _profile(decoder(32, 2))
    switches = [n["attention_switch"] for n, _ in torchdoctor.session_read.walk(session["tree"])
                if n.get("attention_switch")]  # fmt: skip
    assert switches and switches[0] == {"attribute": "flash", "value": False}
    (item,) = [a for a in advise(session) if a.cause == "sdpa"]
    assert "x-transformers' fused attention (attn_flash=True)" in item.title
    assert "pass attn_flash=True to its Encoder / Decoder" in item.fix
    assert "Replace hand-written" not in item.fix and item.code is None
    assert any("Attend.flash is False" in line for line in item.evidence)
    # with the switch on, nothing is noted: no advice names it
    on = _profile(decoder(32, 2, attn_flash=True))
    assert not any(n.get("attention_switch") for n, _ in torchdoctor.session_read.walk(on["tree"]))


def _session(switch=None, file="/home/me/model.py", core="Attend"):
    attend = node("blocks.0.attn.attend", 20.0, 15.0, type=core,
                  source={"file": file, "line": 3, "end_line": 9, "function": "forward"})  # fmt: skip
    if switch is not None:
        attend["attention_switch"] = switch
    qkv = node("blocks.0.attn.qkv", 20.0, 15.0, type="Linear")
    attn = node("blocks.0.attn", 45.0, 35.0, type="SelfAttention", children=[attend, qkv])
    block = node("blocks.0", 50.0, 40.0, type="Block", children=[attn])
    root = node("", 60.0, 40.0, kind="root", children=[block])
    return {"step_ms": {"median": 100.0}, "tree": root,
            "environment": {"device": "cpu", "bf16_native": True}}  # fmt: skip


def _sdpa(session):
    return [a for a in dominant_module(session) if a.cause == "sdpa"]


def test_an_unknown_librarys_switch_is_named_by_its_module_and_attribute():
    (item,) = _sdpa(_session({"attribute": "use_flash", "value": False}))
    assert item.title.endswith("turn on its fused attention (Attend.use_flash) and bf16")
    assert item.fix.startswith("Turn Attend.use_flash on where the model is built")
    (plain,) = _sdpa(_session(core="CoreAttention"))  # (no switch: the rewrite, as before)
    assert plain.title.endswith("use fused attention (SDPA) and bf16")
    assert "Replace hand-written softmax(QK^T)V" in plain.fix


def test_a_hugging_face_model_with_eager_attention_is_told_attn_implementation_sdpa():
    hf = "/venv/lib/python3.11/site-packages/transformers/models/bert/modeling_bert.py"
    eager = {"attribute": "config._attn_implementation", "value": "eager"}
    (item,) = _sdpa(_session(eager, hf, core="BertSelfAttention"))
    assert "transformers' fused attention (attn_implementation=\"sdpa\")" in item.title
    assert 'from_pretrained(..., attn_implementation="sdpa")' in item.fix
    assert any("BertSelfAttention.config._attn_implementation is 'eager'" in e
               for e in item.evidence)  # fmt: skip
    assert item.estimated_saving_ms > 0
    # with attention dropout in training, eager attention runs F.dropout (no Dropout module):
    # on a CPU SDPA then takes its math path; a tiny BERT measured 123 ms eager, 125 ms sdpa
    (dropped,) = _sdpa(_session({**eager, "dropout": 0.1}, hf, core="BertSelfAttention"))
    assert dropped.estimated_saving_ms is None and dropped.saving_range_ms[0] == 0.0
    assert any("unfused math path" in e for e in dropped.evidence)


def test_the_switch_is_read_from_the_modules_own_attributes_and_config():
    model = torch.nn.Linear(2, 2)
    assert attention_switch(model) is None
    model.fused_attn = False
    assert attention_switch(model) == {"attribute": "fused_attn", "value": False}
    hf = torch.nn.Linear(2, 2)
    hf.config = types.SimpleNamespace(_attn_implementation="eager")
    assert attention_switch(hf) == {"attribute": "config._attn_implementation", "value": "eager"}
    hf.config.attention_probs_dropout_prob = 0.1
    assert attention_switch(hf)["dropout"] == 0.1
    hf.config._attn_implementation = "sdpa"
    assert attention_switch(hf) is None


def test_a_config_whose_lookups_raise_is_read_as_no_switch():
    class Strict:
        def __getattr__(self, name):
            raise RuntimeError(f"no key {name}")

    model = torch.nn.Linear(2, 2)
    model.config = Strict()
    assert attention_switch(model) is None  # (the user's run goes on; nothing is noted)


def test_a_run_under_autocast_already_is_not_told_to_add_bf16():
    """TRL's SFTConfig trains under bf16 autocast by default (on a CPU too): its eager Llama
    attention was told 'attn_implementation="sdpa" and bf16', 'Run it under torch.autocast'."""
    hf = "/venv/lib/python3.11/site-packages/transformers/models/llama/modeling_llama.py"
    eager = {"attribute": "config._attn_implementation", "value": "eager"}
    session = _session(eager, hf, core="LlamaAttention")
    session["environment"]["knobs"] = {"autocast": True, "autocast_dtype": "bfloat16"}
    (item,) = _sdpa(session)
    assert item.title.endswith('(attn_implementation="sdpa")') and "autocast" not in item.fix
    (plain,) = _sdpa(_session(core="CoreAttention") | {"environment": session["environment"]})
    assert plain.title.endswith("use fused attention (SDPA)") and "bfloat16" not in plain.fix


def test_a_librarys_source_checkout_is_known_by_a_folder_above_the_file():
    """timm's train.py run in its clone imports timm from there: timm/layers/attention.py. A
    ViT trained with TIMM_FUSED_ATTN=0 was told "turn on its fused attention
    (Attention.fused_attn)", not timm's own switch."""
    clone = "/home/me/pytorch-image-models/timm/layers/attention.py"
    (item,) = _sdpa(_session({"attribute": "fused_attn", "value": False}, clone, core="Attention"))
    assert "timm's fused attention (TIMM_FUSED_ATTN)" in item.title
    assert "TIMM_FUSED_ATTN" in item.fix


def test_a_karras_unet_is_told_its_own_spelling_of_the_switch():
    """denoising-diffusion-pytorch's KarrasUnet takes attn_flash=True; KarrasUnet(flash_attn=
    True), the Unet's spelling it was told, raises a TypeError. The model that built the Attend
    (its parent's file, karras_unet.py) picks the spelling; the Unet keeps flash_attn=True."""
    library = "/src/ddp/denoising_diffusion_pytorch/"
    flash = {"attribute": "flash", "value": False}
    karras = _session(flash, library + "attend.py")
    attn = next(n for n, _ in torchdoctor.session_read.walk(karras["tree"])
                if n.get("path") == "blocks.0.attn")  # fmt: skip
    attn["source"] = {"file": library + "karras_unet.py", "line": 370}
    (item,) = _sdpa(karras)
    assert "(attn_flash=True)" in item.title and "KarrasUnet(..., attn_flash=True)" in item.fix
    assert "flash_attn=True)" not in item.fix
    attn["source"] = {"file": library + "denoising_diffusion_pytorch.py", "line": 240}
    (unet,) = _sdpa(karras)
    assert "(flash_attn=True)" in unet.title and "Unet(dim=..., flash_attn=True)" in unet.fix


def test_timm_is_told_to_unset_its_variable_before_the_experimental_mode():
    """A ViT trained with TIMM_FUSED_ATTN=0 needs it unset (or 1); only a model that takes fused
    attention in experimental mode needs 2 (clients round 16: "set TIMM_FUSED_ATTN=2" was told
    to the ViT)."""
    timm = "/venv/lib/python3.11/site-packages/timm/layers/attention.py"
    (item,) = _sdpa(_session({"attribute": "fused_attn", "value": False}, timm, core="Attention"))
    assert "unset TIMM_FUSED_ATTN (or set it to 1)" in item.fix
    assert item.fix.index("unset") < item.fix.index("set it to 2")
