"""Padding in a step's token batches: how many of the positions the model computes are real.

A text model gets a batch of sequences padded to one length and an attention mask saying which
positions are real (Hugging Face's ``attention_mask``: 1 real, 0 padding; PyTorch's
``src_key_padding_mask`` / ``key_padding_mask``: True padding). Every position costs the
same compute in the linear layers whether real or not, so with lengths 10-64 padded to 64 a
large share of the forward and backward is spent on padding. The remedies are known (pad each
batch to its longest sequence; group sequences of similar length), and which one applies shows
in the mask: each row's real length.

In detailed steps only, the first module call of the step (any depth: a wrapper's inner model)
that gets a 2-D mask whose shape matches its input's first two dimensions (a decoding step's
one new token against a longer mask is no padded batch) is measured: positions, real tokens,
and each row's real length (what batches of similar lengths would pad). On a GPU the lengths
stay on the device until the step is summarized (no wait of their own). A run whose first detailed steps
show no mask stops looking.

Example:
    >>> import torch
    >>> probe = PaddingProbe()
    >>> mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    >>> probe.note(torch.nn.Identity(), (), {"input_ids": torch.ones(2, 4), "attention_mask": mask})
    >>> resolve(probe.take())  # 8 positions, 5 real; padded to the longest row: 2 x 3
    {'positions': 8, 'real': 5, 'per_batch': 6, 'lengths': [3, 2]}
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

#: keyword names of a mask where 1 / True marks a real position
REAL_MASKS = ("attention_mask",)
#: ... and of one where True marks padding
PAD_MASKS = ("src_key_padding_mask", "key_padding_mask", "padding_mask")
#: keyword names of the input the mask describes (else the first positional tensor)
INPUTS = ("input_ids", "inputs_embeds", "src", "x", "input", "query")
#: detailed steps without any mask after which the probe stops looking
GIVE_UP_AFTER = 3
#: rows of a batch whose lengths are kept, in the session's first steps that have any
MAX_ROWS, PADDING_LENGTHS = 1024, 16


class PaddingProbe:
    """Measures the first padded batch of each detailed step (see the module docstring).

    Example:
        >>> probe = PaddingProbe()
        >>> probe.note(torch.nn.Identity(), (torch.ones(2, 3),), {})  # no mask
        >>> probe.take() is None, probe.wanted
        (True, True)
    """

    def __init__(self) -> None:
        self.wanted = True  # look at this step's calls (False: found, or given up)
        self.found: tuple[int, Any] | None = None
        self._empty_steps = 0  # detailed steps without a mask (a run with none: stop looking)
        self._positional: dict[type, int | None] = {}  # a forward's attention_mask position

    def note(self, module: Any, args: tuple, kwargs: Any) -> None:
        """A forward call returned with ``args`` and ``kwargs``: measure its mask, if any."""
        mask, real = None, True
        if kwargs:
            for name in REAL_MASKS:
                mask = kwargs.get(name)
                if mask is not None:
                    break
            else:
                for name in PAD_MASKS:
                    mask = kwargs.get(name)
                    if mask is not None:
                        real = False
                        break
        if mask is None and len(args) > 1:
            index = self._mask_position(type(module))
            if index is not None and index < len(args):
                mask = args[index]
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.is_floating_point():
            return
        data = next((kwargs[k] for k in INPUTS if isinstance(kwargs.get(k), torch.Tensor)),
                    None) if kwargs else None  # fmt: skip
        if data is None:
            data = next((a for a in args if isinstance(a, torch.Tensor) and a is not mask), None)
        if data is None or data.dim() < 2 or tuple(data.shape[:2]) != tuple(mask.shape):
            return  # (a decoding step: one new token against the whole mask)
        try:
            with torch.no_grad():
                rows = (mask != 0) if real else (mask == 0)
                self.found = (mask.numel(), rows.sum(dim=1)[:MAX_ROWS])
        except Exception:  # (a tensor subclass or layout that refuses: nothing measured)
            return
        self.wanted = False

    def _mask_position(self, cls: type) -> int | None:
        if cls not in self._positional:
            try:
                names = list(inspect.signature(cls.forward).parameters)[1:]  # (after self)
                self._positional[cls] = names.index("attention_mask")
            except (TypeError, ValueError, AttributeError):
                self._positional[cls] = None
        return self._positional[cls]

    def take(self) -> tuple[int, Any] | None:
        """The step's measurement (the batch's positions, its rows' real lengths: a tensor,
        on the device; :func:`resolve`), and look again next step."""
        found, self.found = self.found, None
        if found is None:
            self._empty_steps += 1
        else:  # (a run with masks: every detailed step is looked at)
            self._empty_steps = -(1 << 62)
        self.wanted = self._empty_steps < GIVE_UP_AFTER
        return found


def resolve(found: tuple[int, Any] | None, keep_lengths: bool = True) -> dict[str, Any] | None:
    """:meth:`PaddingProbe.take`'s measurement as numbers (reads a device tensor: call it when
    the step's device work is done): ``positions`` computed, ``real`` tokens among them,
    ``per_batch`` positions had the batch been padded to its longest row, and with
    ``keep_lengths`` the rows' ``lengths``.

    Example:
        >>> resolve((12, torch.tensor([4, 3, 2])))
        {'positions': 12, 'real': 9, 'per_batch': 12, 'lengths': [4, 3, 2]}
        >>> resolve(None)
    """
    if found is None:
        return None
    positions, lengths = found
    try:
        rows = [int(n) for n in lengths.tolist()]
    except Exception:  # (a meta or fake tensor: no values to read)
        return None
    entry: dict[str, Any] = {"positions": int(positions), "real": sum(rows),
                             "per_batch": max(rows, default=0) * len(rows)}  # fmt: skip
    if keep_lengths:
        entry["lengths"] = rows
    return entry
