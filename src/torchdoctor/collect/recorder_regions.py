"""Regions as nodes of the recorder's tree: their forward calls and backward marks.

The half of :class:`~torchdoctor.collect.recorder.Recorder` that ``torchdoctor.region``
drives: a region call is a node under the running module (or region), its forward time is
its enter-exit span, and its backward is found when a backward pass starts
(:meth:`RegionEvents.hook_regions`, ``collect/region_graph.py``). A region open across a
backward pass (around forward *and* backward) is split: the pass counts as its backward.

Example:
    >>> from torchdoctor.collect.clocks import CpuClock
    >>> from torchdoctor.collect.recorder import Recorder
    >>> rec = Recorder(CpuClock())
    >>> handle = rec.enter_region("loss", None)
    >>> rec.exit_region(handle, in_backward=False)
    >>> rec.path[rec.fwd[0][0]], rec.kind[rec.fwd[0][0]]
    ('loss', 'region')
"""

from __future__ import annotations

import gc
from functools import partial
from typing import Any

from torchdoctor.collect.lines_frames import USER, kind_of_file
from torchdoctor.collect.naming import source_of_class
from torchdoctor.collect.records import BackwardMark, ForwardCall, Frame, MarkKind
from torchdoctor.collect.region_graph import region_boundaries, roots_of, sequence_nr
from torchdoctor.collect.state import STATE

#: module class -> whether it is a library's (shadow_owner)
_LIBRARY_CLASS: dict[type, bool] = {}

_START, _END = MarkKind.START, MarkKind.END


class RegionEvents:
    """Region calls recorded on a :class:`~torchdoctor.collect.recorder.Recorder`.

    Example:
        >>> from torchdoctor.collect.clocks import CpuClock
        >>> from torchdoctor.collect.recorder import Recorder
        >>> rec = Recorder(CpuClock())
        >>> outer = rec.enter_region("loss", None)
        >>> inner = rec.enter_region("reduce", None)
        >>> rec.exit_region(inner, in_backward=False)
        >>> rec.exit_region(outer, in_backward=False)
        >>> sorted(rec.path[call[0]] for call in rec.fwd)
        ['loss', 'loss.reduce']
    """

    frames: list[Frame]
    fwd: list[ForwardCall]
    bwd: list[BackwardMark]
    path: list[str]
    node_ids: dict[tuple[int, Any], int]
    region_calls: list[tuple[int, int, tuple[int, int]]]
    backward_open: list[list[int]]
    backward: bool
    recording: bool
    serial: int
    first_serial: int
    now: Any
    node_for: Any
    region_path: Any
    on_owner: Any
    library: list[bool]
    in_library: bool
    _mark: Any

    def shadow_owner(self, module: Any) -> None:
        """In a light step under compiled code (``owner_shadow``): an outermost call's owner
        still parks the hot-lines mode as a detailed step's would (``ModeParking.pause``,
        shadow), so compiled code always sees one torch function mode stack.

        Example:
            >>> import torch
            >>> class Rec(RegionEvents):
            ...     in_library, on_owner = False, None
            >>> rec = Rec(); rec.shadow_owner(torch.nn.Linear(1, 1)); rec.in_library
            True
        """
        cls = type(module)
        library = _LIBRARY_CLASS.get(cls)
        if library is None:
            file = (source_of_class(cls) or {}).get("file")
            library = _LIBRARY_CLASS[cls] = not file or kind_of_file(str(file)) != USER
        if library is not self.in_library:
            self._owner_became(library)

    def _owner_became(self, library: bool) -> None:
        """The innermost call became a library module's (``library``) or the user's again:
        record it and tell ``on_owner`` (callers compare with ``in_library`` first, so a call
        that keeps the owner's kind costs no method call)."""
        self.in_library = library
        if self.on_owner is not None:
            self.on_owner(library)

    # -- regions --------------------------------------------------------------------------
    def enter_region(self, name: str, source: Any, in_backward: bool = False) -> tuple:
        frames = self.frames
        parent = frames[-1].node if frames else 0
        key = ("region", name)
        node = self.node_ids.get((parent, key))
        if node is None:
            path = self.region_path(parent, name)
            node = self.node_for(parent, key, path, "region", None, source, name=name)
        serial = self.serial = self.serial + 1
        # graph nodes made in the region are numbered from here (see region_graph.py)
        enter = sequence_nr() if self.backward and not in_backward else -1
        token = self.now()
        frames.append(Frame(node, None, serial, token))
        STATE.module_stack.append(self.path[node])
        if self.in_library:  # (a region is the user's)
            self._owner_became(False)
        return node, serial, token, enter

    def exit_region(self, handle: tuple, in_backward: bool) -> None:
        node, serial, start, enter = handle
        end = self.now()
        frames = self.frames
        if frames and frames[-1].is_region and frames[-1].serial == serial:
            start = frames.pop().token  # moved past a backward pass run inside the region
            if STATE.module_stack:
                STATE.module_stack.pop()
            library = self.library[frames[-1][0]] if frames else False
            if library is not self.in_library:
                self._owner_became(library)
        if in_backward:
            self.bwd.append(BackwardMark(node, serial, _START, start))
            self.bwd.append(BackwardMark(node, serial, _END, end))
            return
        self.fwd.append(ForwardCall(node, start, end))
        if enter >= 0 and serial >= self.first_serial:
            exit_ = sequence_nr()
            if exit_ > enter:
                self.region_calls.append((enter, exit_, (node, serial)))

    def split_open_regions(self, split: bool) -> None:
        """A backward pass starts (``split``: not nested in another one): the regions now open
        (a region around forward *and* backward) count its time as their backward, not forward,
        so they still cover the backward time of the modules and regions inside them."""
        opened: list[int] = []
        if split and self.recording:
            now = None
            for index, frame in enumerate(self.frames):
                if frame.is_region:
                    if now is None:
                        now = self.now()
                    self.fwd.append(ForwardCall(frame.node, frame.token, now, piece=True))
                    self.bwd.append(BackwardMark(frame.node, frame.serial, _START, now))
                    opened.append(index)
        self.backward_open.append(opened)

    def resume_open_regions(self) -> None:
        """The backward pass returned: the regions split at its start resume their forward."""
        opened = self.backward_open.pop() if self.backward_open else []
        if not opened:
            return
        now = self.now()
        frames = self.frames
        for index in opened:
            if index < len(frames) and frames[index].is_region:
                frame = frames[index]
                self.bwd.append(BackwardMark(frame.node, frame.serial, _END, now))
                frames[index] = frame._replace(token=now)

    def hook_regions(self, roots: Any) -> None:
        """At the start of a backward pass: hook the outputs and inputs of the regions whose
        graph nodes it reaches (``region_graph.py``); regions it does not reach stay pending."""
        calls = self.region_calls
        if not calls:
            return
        # the walk allocates a wrapper and a tuple per node: without this, the collector's
        # full passes over the whole process (10x the walk itself on the demo) fire inside it
        collecting = gc.isenabled()
        gc.disable()
        try:
            found = region_boundaries(calls, roots_of(roots))
        finally:
            if collecting:
                gc.enable()
        if not found:
            return
        self.region_calls = [c for c in calls if c[2] not in found]
        for (node, serial), (outputs, inputs) in found.items():
            for nodes, kind in ((outputs, _START), (inputs, _END)):
                mark = partial(self._mark, node, serial, kind)
                for fn in nodes:
                    try:
                        fn.register_prehook(mark)
                    except RuntimeError:  # a node refusing hooks: leave it unmarked
                        continue
