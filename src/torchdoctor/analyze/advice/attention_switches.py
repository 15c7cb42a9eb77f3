"""A library's own switch for fused attention, left off: the fix is that switch, not a rewrite.

x-transformers builds its attention with ``Attend(flash=False)`` unless told ``attn_flash=True``;
lucidrains' diffusion U-Net takes ``flash_attn=True``; timm turns ``fused_attn`` off by an
environment variable; a Hugging Face model loaded with eager attention takes
``attn_implementation="sdpa"``. The profiler notes such a switch on the module that holds it
(the tree node's ``attention_switch``, read when the module is first seen); the attention advice
then names the switch where the model is built (an x-transformers run was told to "replace
hand-written softmax(QK^T)V", in the library's code, which its ``attn_flash=True`` does).

Example:
    >>> node = {"path": "net.attn_layers", "type": "Decoder", "children": [
    ...     {"path": "net.attn_layers.layers.0.1.attend", "type": "Attend",
    ...      "source": {"file": "/v/site-packages/x_transformers/attend.py"},
    ...      "attention_switch": {"attribute": "flash", "value": False}}]}
    >>> switch = switch_in([node])
    >>> switch.owner, switch.setting
    ('Attend.flash', 'False')
    >>> switch.title
    "turn on x-transformers' fused attention (attn_flash=True)"
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchdoctor.analyze.advice.base import Advice, same_file, split_location
from torchdoctor.session_read import installed_package, walk

#: package -> (its name, its switch in a word, where the switch is set): the fix says it first
LIBRARY_SWITCHES: dict[str, tuple[str, str, str]] = {
    "x_transformers": (
        "x-transformers'", "attn_flash=True",
        "pass attn_flash=True to its Encoder / Decoder (`Decoder(dim=..., depth=..., "
        "attn_flash=True)`), which builds each Attend with flash=True: it then calls "
        "F.scaled_dot_product_attention (options that need the attention matrix, such as "
        "residual attention or talking heads, keep it off)",
    ),
    "denoising_diffusion_pytorch": (
        "denoising-diffusion-pytorch's", "flash_attn=True",
        "pass flash_attn=True to its Unet (`Unet(dim=..., flash_attn=True)`): its full "
        "attention layers then call F.scaled_dot_product_attention",
    ),
    "timm": (
        "timm's", "TIMM_FUSED_ATTN",
        "timm leaves fused_attn off when TIMM_FUSED_ATTN=0 is set, or for a model that takes "
        "it only in experimental mode: unset TIMM_FUSED_ATTN (or set it to 1); for such a "
        "model set it to 2 (or call timm.layers.set_fused_attn(True, experimental=True) before "
        "timm.create_model)",
    ),
    "transformers": (
        "transformers'", 'attn_implementation="sdpa"',
        'load the model with attn_implementation="sdpa" (`from_pretrained(..., '
        'attn_implementation="sdpa")`, where its architecture supports it; transformers '
        "raises if not)",
    ),
}

#: (package, the file of the model that builds the attention, by the start of its name) -> the
#: switch where that model family spells it otherwise: denoising-diffusion-pytorch's KarrasUnet
#: (karras_unet.py, and its 1D and 3D kin) takes ``attn_flash``; ``flash_attn=True`` raises there
SWITCH_VARIANTS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("denoising_diffusion_pytorch", "karras_unet"): (
        "denoising-diffusion-pytorch's", "attn_flash=True",
        "pass attn_flash=True to its KarrasUnet (`KarrasUnet(..., attn_flash=True)`; "
        "KarrasUnet1D and KarrasUnet3D take it too, and none takes flash_attn): its attention "
        "layers then call F.scaled_dot_product_attention",
    ),
}


@dataclass(frozen=True)
class Switch:
    """A fused-attention switch left off: on which module (``owner``: ``Attend.flash``), at
    what value, the title's words and the fix that turn it on.

    Example:
        >>> Switch("Attend.flash", "False", "turn on Attend.flash", "Turn it on.").owner
        'Attend.flash'
    """

    owner: str
    setting: str
    title: str
    fix: str
    #: the attention-weight dropout its module runs without a Dropout module (a Hugging Face
    #: config's ``attention_probs_dropout_prob`` under eager attention: ``F.dropout``)
    dropout: float = 0.0


def switch_in(nodes: Sequence[Mapping[str, Any]],
              tree: Mapping[str, Any] | None = None) -> Switch | None:  # fmt: skip
    """The first fused-attention switch left off inside ``nodes`` (a module or the layers of a
    stack, with their descendants), with the fix for its library (spelled as the model holding
    it, found in ``tree`` or else in ``nodes``, spells it); None when there is none.

    Example:
        >>> switch_in([{"path": "attn", "type": "Attention"}]) is None
        True
    """
    for top in nodes:
        for node, _ in walk(top):
            found = node.get("attention_switch")
            if isinstance(found, Mapping) and found.get("attribute"):
                return _switch(node, found, _parent_file(node, tree or top))
    return None


def _parent_file(node: Mapping[str, Any], tree: Mapping[str, Any] | None) -> str:
    """The source file of the module holding ``node`` in ``tree`` (the model's attention layer
    that built the library's ``Attend``); "" when it is not there."""
    path = str(node.get("path") or "")
    parent = path.rsplit(".", 1)[0] if "." in path else None
    return next((str((n.get("source") or {}).get("file") or "") for n, _ in walk(tree)
                 if parent is not None and n.get("path") == parent), "")  # fmt: skip


def _switch(node: Mapping[str, Any], found: Mapping[str, Any], parent_file: str = "") -> Switch:
    attribute, value = str(found["attribute"]), found.get("value")
    owner = f"{node.get('type') or 'its module'}.{attribute}"
    setting = repr(value) if isinstance(value, str) else str(value)
    package = _package(str((node.get("source") or {}).get("file") or ""))
    stem = os.path.basename(parent_file.replace("\\", "/"))
    known = next((spelled for (library, start), spelled in SWITCH_VARIANTS.items()
                  if package == library and stem.startswith(start)),
                 LIBRARY_SWITCHES.get(package or ""))  # fmt: skip
    if known is not None:
        name, word, how = known
        title = f"turn on {name} fused attention ({word})"
        fix = f"Turn on {name} fused attention instead of rewriting it: {how}."
    else:
        title = f"turn on its fused attention ({owner})"
        fix = (f"Turn {owner} on where the model is built, so its attention calls "
               "F.scaled_dot_product_attention (one fused kernel) instead of computing "
               "softmax(QK^T)V step by step.")  # fmt: skip
    dropout = found.get("dropout")
    return Switch(owner, setting, title, fix,
                  float(dropout) if isinstance(dropout, (int, float)) else 0.0)  # fmt: skip


def _package(file: str) -> str | None:
    """The package a module's class comes from: installed, or a source checkout's folder
    (``.../x_transformers/attend.py`` on the PYTHONPATH), the nearest known one above the file
    (timm's train.py run in its clone imports ``timm/layers/attention.py`` from there).

    Example:
        >>> _package("/src/xt/x_transformers/attend.py"), _package("/v/site-packages/timm/a.py")
        ('x_transformers', 'timm')
        >>> _package("/src/pytorch-image-models/timm/layers/attention.py")
        'timm'
    """
    package = installed_package(file)
    if package is not None:
        return package
    folders = os.path.dirname(file.replace("\\", "/")).split("/")
    return next((folder for folder in reversed(folders) if folder in LIBRARY_SWITCHES), None)


def with_attention_switches(session: Mapping[str, Any], found: list[Advice]) -> list[Advice]:
    """The fused-attention advice on a source line of a module whose switch is off (a library
    checkout's ``attend.py`` line timed as a hot line, a TD507 finding there) fixed by that
    switch, as the dominant-module advice on the module is: merged by cause, the strongest
    entry's fix is the one shown.

    Example:
        >>> attend = {"path": "a", "type": "Attend", "source": {"file": "/x/x_transformers/attend.py"},
        ...           "attention_switch": {"attribute": "flash", "value": False}}
        >>> line = Advice("hot-line", "attend.py:13 takes 10%", cause="sdpa",
        ...               locations=["/x/x_transformers/attend.py:13"], fix="Replace it.")
        >>> item = with_attention_switches({"tree": attend}, [line])[0]
        >>> item.fix[:40], item.title
        ("Turn on x-transformers' fused attention ", "attend.py:13 takes 10%: turn on x-transformers' fused attention (attn_flash=True)")
    """
    switches = [(str((n.get("source") or {}).get("file") or ""), n) for n, _ in
                walk(session.get("tree")) if isinstance(n.get("attention_switch"), Mapping)]  # fmt: skip
    if not switches:
        return found
    for item in found:
        if item.cause != "sdpa" or item.rule == "dominant-module":  # (that one: by its subtree)
            continue
        files = [split_location(text)[0] for text in item.locations]
        owner = next((n for file, n in switches if any(same_file(file, f) for f in files)), None)
        if owner is None:
            continue
        switch = _switch(owner, owner["attention_switch"], _parent_file(owner, session.get("tree")))
        item.evidence.append(f"its {switch.owner} is {switch.setting}: the fused attention it "
                             "has is off")  # fmt: skip
        item.fix, item.code = switch.fix, None
        if switch.title not in item.title:  # (the cure in the title: a hot line ranked above
            item.title += f": {switch.title}"  # the module's advice is the one shown)
    return found
