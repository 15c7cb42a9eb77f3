"""Naive references: the slow "before" versions that the seeds started from.

They are kept deliberately naive (Python loops, host round trips, one solve per pair) and are
used by tests (equivalence), benchmarks (the baseline column) and the slow workload variants.
Import them from their modules, e.g. ``torchdoctor.ops.reference.segments``.

Example:
    >>> import torch
    >>> from torchdoctor.ops.reference.labels import remap_labels_before
    >>> remap_labels_before(torch.tensor([7, 3, 7])).tolist()
    [1, 0, 1]
"""
