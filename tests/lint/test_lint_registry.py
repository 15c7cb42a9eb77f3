"""Registry invariants: stable code shape, documented rules, real replacement names."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from torchdoctor.lint import RULES, lint_source, resolve_codes
from torchdoctor.lint.docs import rules_markdown
from torchdoctor.lint.runner import FAMILIES

ROOT = Path(__file__).resolve().parents[2]


def test_codes_are_well_formed_and_owned_by_one_family() -> None:
    assert all(re.fullmatch(r"TD[0-7]\d\d", code) for code in RULES)
    owned = [code for family in FAMILIES for code in family.CODES]
    assert sorted(owned) == sorted(set(RULES) - {"TD000"})


def test_docs_file_is_generated_from_the_registry() -> None:
    assert (ROOT / "docs" / "lint-rules.md").read_text() == rules_markdown()


@pytest.mark.parametrize("code", [c for c in RULES if RULES[c].replacement])
def test_replacement_names_exist(code: str) -> None:
    module_name, _, attr = RULES[code].replacement.rpartition(".")
    assert hasattr(importlib.import_module(module_name), attr)


def test_resolve_codes_prefixes() -> None:
    assert resolve_codes(select=["TD3"]) == {
        "TD000",
        "TD301",
        "TD302",
        "TD303",
        "TD304",
        "TD305",
        "TD306",
        "TD307",
    }
    assert "TD000" not in resolve_codes(ignore=["TD000"])
    assert resolve_codes(select=["all"]) == set(RULES)


def test_documented_bad_examples_fire_and_good_ones_do_not() -> None:
    header = (
        "import torch\nfrom torch.nn.attention import SDPBackend, sdpa_kernel\n"
        "from torch.utils.data import DataLoader\nimport torchdoctor\n"
        "from scipy.optimize import linear_sum_assignment\n"
    )
    for code, rule in RULES.items():
        if code in {"TD000", "TD201", "TD601", "TD602"}:
            continue  # these examples are fragments of a loop or function
        for example, fires in ((rule.bad, True), (rule.good, False)):
            src = header + "def f(A, S, x, rhs, xs, loader, ds, opt, model, y, dev, b, sim):\n"
            src += "".join(f"    {line}\n" for line in example.splitlines())
            if example.endswith(":"):
                src += "        pass\n"
            got = {f.code for f in lint_source(src + "    x.cuda()\n")}
            assert (code in got) == fires, (code, example, got)
