"""Torch calls named apart by what they were called on (``torch.mm[sparse_coo]``,
``F.binary_cross_entropy[sigmoid]``): the hot-lines collector (``collect/lines.py``) times such a
call under its variant's name, so the advice can give the variant's own cure (the sparse layout;
the logits loss) instead of the plain op's.

Example:
    >>> import torch
    >>> from torchdoctor.collect.lines_install import op_name
    >>> op_name(sparse_call(torch.mm, (torch.eye(2).to_sparse(), torch.ones(2, 1))))
    'torch.mm[sparse_coo]'
"""

from __future__ import annotations

from typing import Any

import torch


class VariantCall:
    """A torch callable called on inputs whose kind changes its cure, named apart
    (``torch.mm[sparse_coo]``: a sparse operand, whose cure is the layout, not precision or
    shape; ``F.binary_cross_entropy[sigmoid]``: probabilities made by a sigmoid, whose cure is
    the logits loss). One object per function and variant (the hot-lines table keys its ops by
    it).

    Example:
        >>> from torchdoctor.collect.lines_install import op_name
        >>> a = torch.eye(3).to_sparse()
        >>> op_name(sparse_call(torch.mm, (a, torch.ones(3, 2))))
        'torch.mm[sparse_coo]'
        >>> sparse_call(torch.mm, (torch.ones(2, 3), torch.ones(3, 2))) is torch.mm  # dense
        True
    """

    __slots__ = ("func", "variant")

    def __init__(self, func: Any, variant: str) -> None:
        self.func, self.variant = func, variant


_variant_calls: dict[tuple[Any, str], VariantCall] = {}


def variant_call(func: Any, variant: str) -> VariantCall:
    """The one :class:`VariantCall` of ``func`` and ``variant``.

    Example:
        >>> variant_call(torch.mm, "sparse_csr") is variant_call(torch.mm, "sparse_csr")
        True
    """
    key = (func, variant)
    call = _variant_calls.get(key)
    if call is None:
        call = _variant_calls[key] = VariantCall(func, variant)
    return call


def sparse_call(func: Any, args: tuple) -> Any:
    """``func`` itself, or its :class:`VariantCall` named by the layout when one of its first
    three arguments is a sparse tensor.

    Example:
        >>> from torchdoctor.collect.lines_install import op_name
        >>> op_name(sparse_call(torch.mm, (torch.eye(2).to_sparse_csr(), torch.ones(2, 1))))
        'torch.mm[sparse_csr]'
    """
    for arg in args[:3]:
        if isinstance(arg, torch.Tensor) and arg.layout is not torch.strided:
            return variant_call(func, str(arg.layout).removeprefix("torch."))
    return func


def probabilities_call(func: Any, args: tuple) -> Any:
    """``func`` itself, or its :class:`VariantCall` ``[sigmoid]`` when its input was made by a
    sigmoid (its autograd node is ``SigmoidBackward0``; under ``no_grad`` nothing tells).

    Example:
        >>> from torchdoctor.collect.lines_install import op_name
        >>> x = torch.zeros(3, requires_grad=True)
        >>> bce = torch.nn.functional.binary_cross_entropy
        >>> op_name(probabilities_call(bce, (torch.sigmoid(x), torch.ones(3))))
        'F.binary_cross_entropy[sigmoid]'
        >>> probabilities_call(bce, (torch.rand(3), torch.ones(3))) is bce
        True
    """
    node = getattr(args[0], "grad_fn", None) if args else None
    if node is not None and type(node).__name__ == "SigmoidBackward0":
        return variant_call(func, "sigmoid")
    return func
