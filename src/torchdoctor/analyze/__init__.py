"""Analysis: pure functions that take a Session (or a tree node) and return new values; no I/O."""
