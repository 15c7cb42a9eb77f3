"""Collection rules for the whole tree (tests and the package's docstring examples)."""

import importlib.util

# The compiled DPP engine imports numba, an optional dependency; without it the module is
# never imported by torchdoctor (the NumPy engine runs), so its examples are skipped too.
collect_ignore = [] if importlib.util.find_spec("numba") else ["src/torchdoctor/ops/_greedy_jit.py"]
