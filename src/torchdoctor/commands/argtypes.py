"""Argument types shared by the commands: numbers that say what was expected when wrong.

Example:
    >>> positive("3"), non_negative("0"), positive_float("0.5"), seconds("0")
    (3, 0, 0.5, 0.0)
"""

from __future__ import annotations

import argparse
import os


def non_negative(text: str) -> int:
    """An integer >= 0 (a warm-up).

    Example:
        >>> non_negative("-1")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected an integer >= 0, got -1
    """
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive(text: str) -> int:
    """An integer >= 1 (a number of steps).

    Example:
        >>> positive("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected an integer >= 1, got 0
    """
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (a budget, a tolerance).

    Example:
        >>> positive_float("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a number > 0, got 0
    """
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def percent(text: str) -> float:
    """A percentage in (0, 100] (a share of the run's time).

    Example:
        >>> percent("3")
        3.0
        >>> percent("150")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a percentage > 0 and <= 100, got 150
    """
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage > 0 and <= 100, got {text}")
    return value


def seconds(text: str) -> float:
    """Seconds >= 0, where 0 turns the thing off (a checkpoint period).

    Example:
        >>> seconds("-2")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected seconds >= 0 (0: off), got -2
    """
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: off), got {text}")
    return value


def module_target(argv: list[str] | tuple[str, ...], i: int) -> tuple[str, list[str]] | None:
    """``(module, what follows it)`` when ``argv[i]`` is python's ``-m MODULE`` (or
    ``-mMODULE``); None otherwise. The module is "" when none follows.

    Example:
        >>> module_target(["-m", "pkg.train", "--lr", "1"], 0), module_target(["-mpkg"], 0)
        (('pkg.train', ['--lr', '1']), ('pkg', []))
        >>> module_target(["--max-steps", "3"], 0) is None
        True
    """
    token = argv[i]
    if not token.startswith("-m") or token.startswith("--"):
        return None
    if token[2:]:
        return token[2:], list(argv[i + 1 :])
    return (argv[i + 1] if i + 1 < len(argv) else ""), list(argv[i + 2 :])


def unwritable_out(path: str) -> str | None:
    """Why the output folder ``path`` cannot take the session, or None: checked before the
    script runs, so a long run does not end without its results. Nothing is created: a
    missing folder is judged by its nearest existing parent (the session's writer makes it),
    so ranks started together under torchrun never race on making and removing it.

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> unwritable_out(root) is None, unwritable_out(os.path.join(root, "a", "b")) is None
        (True, True)
        >>> "is a file" in unwritable_out(__file__)
        True
        >>> "is a file" in unwritable_out(os.path.join(__file__, "out"))
        True
    """
    if os.path.isfile(path):
        return f"--out {path} is a file; give a folder (it will hold session.json and the reports)"
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return (
            f"--out {path} cannot be created: {probe} is a file, not a folder; "
            "give a writable folder"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == os.path.abspath(path) else f" (its parent {probe} is not)"
        return f"--out {path} is not writable{where}; give a writable folder"
    return None
