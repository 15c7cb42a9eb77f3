"""The short name a report gives a source file: its base name, or, for code Python compiled
from a string, the name it was given.

torch.fx compiles a GraphModule's generated forward under a file name such as
``<eval_with_key>.1 from /w/train.py:6 in forward`` (the key, then where the traced module was
defined). ``os.path.basename`` of that reads ``train.py:6 in forward``, so a line of the
generated code showed as ``train.py:6 in forward:7``: line 6 of train.py, to a reader, while
it is line 7 of the generated code. collect/ and render/ both name files through here.

Example:
    >>> short_file("/w/train.py"), short_file("<eval_with_key>.1 from /w/train.py:6 in forward")
    ('train.py', '<eval_with_key>.1')
"""

from __future__ import annotations

import os


def short_file(file: object) -> str:
    """The base name of a file path; for a pseudo-file name (``<string>``, ``<eval_with_key>.3
    from /w/t.py:6 in forward``), its first word, whole.

    Example:
        >>> short_file("<stdin>"), short_file("/a/b/c.py"), short_file("c.py")
        ('<stdin>', 'c.py', 'c.py')
    """
    text = str(file)
    if text.startswith("<"):
        return text.split(" ", 1)[0]
    return os.path.basename(text)
