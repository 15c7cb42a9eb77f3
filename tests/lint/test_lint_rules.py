"""Rule fixtures: every ``# expect: TDxxx`` line fires exactly those codes; no other line fires."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from torchdoctor.lint import RULES, lint_source

FIXTURES = Path(__file__).resolve().parents[1] / "lint_fixtures"
RULE_FIXTURES = sorted(FIXTURES.glob("td*.py"))
_EXPECT = re.compile(r"# expect: (TD\d+(?:,\s*TD\d+)*)")


def expectations(text: str) -> set[tuple[int, str]]:
    out = set()
    for number, line in enumerate(text.splitlines(), 1):
        match = _EXPECT.search(line)
        if match:
            out |= {(number, code.strip()) for code in match.group(1).split(",")}
    return out


@pytest.mark.parametrize("fixture", RULE_FIXTURES, ids=lambda p: p.name)
def test_fixture_findings_match_expectations(fixture: Path) -> None:
    text = fixture.read_text()
    found = lint_source(text, str(fixture))
    got = {(f.line, f.code) for f in found}
    expected = expectations(text)
    said = [(f.line, f.code, f.message) for f in found]
    assert sorted({s for s in said if said.count(s) > 1}) == [], "a line says the same twice"
    assert sorted(got - expected) == [], "unexpected findings"
    assert sorted(expected - got) == [], "missing findings"


def test_every_rule_has_a_positive_fixture_and_negative_lines() -> None:
    codes = set()
    for fixture in RULE_FIXTURES:
        codes |= {code for _, code in expectations(fixture.read_text())}
    assert codes == set(RULES) - {"TD000"}
    # every fixture also holds lines that must stay silent (near-misses)
    for fixture in RULE_FIXTURES:
        text = fixture.read_text()
        assert len(text.splitlines()) > 2 * len(expectations(text))


def test_alias_imports_resolve() -> None:
    src = (
        "import torch as T\n"
        "from torch.linalg import inv\n"
        "from scipy.optimize import linear_sum_assignment as lsa\n"
        "a = T.linalg.inv(A) @ b\n"
        "c = inv(A) @ b\n"
        "r, c = lsa(x.cpu().numpy())\n"
    )
    assert [(f.line, f.code) for f in lint_source(src)] == [
        (4, "TD101"),
        (5, "TD101"),
        (6, "TD303"),
    ]


def test_shadowed_name_is_not_torch() -> None:
    src = "def inv(a):\n    return a\n\ny = inv(A) @ b\nz = linear_sum_assignment(x.cpu())\n"
    assert lint_source(src) == []


def test_finding_shape_matches_session_schema() -> None:
    (finding,) = lint_source("import torch\ny = torch.linalg.inv(A) @ b\n", path="m.py")
    data = finding.to_dict()
    assert set(data) == {
        "code",
        "severity",
        "message",
        "path",
        "line",
        "column",
        "end_line",
        "end_column",
        "replacement",
        "fixable",
    }
    assert (data["path"], data["line"], data["column"], data["end_line"]) == ("m.py", 2, 5, 2)
    assert data["end_column"] == 5 + len("torch.linalg.inv(A)")
    assert data["severity"] == RULES["TD101"].severity
    assert data["replacement"] == "torchdoctor.ops.cholesky_factor"
    assert "solve" in data["message"]


def test_syntax_error_is_a_finding() -> None:
    (finding,) = lint_source((FIXTURES / "syntax_error.py").read_text(), "bad.py")
    assert finding.code == "TD000" and finding.line == 3 and finding.severity == "error"


@pytest.mark.parametrize(
    ("line", "expected"), [(5, []), (6, []), (7, [(7, "TD101")])], ids=["code", "bare", "other"]
)
def test_noqa(line: int, expected: list) -> None:
    found = [(f.line, f.code) for f in lint_source((FIXTURES / "noqa_cases.py").read_text())]
    assert [x for x in found if x[0] == line] == expected


def test_select_and_ignore() -> None:
    text = (FIXTURES / "td4_data.py").read_text()
    assert {f.code for f in lint_source(text, select=["TD40"], ignore=["TD402"])} == {
        "TD401",
        "TD403",
        "TD404",
    }
    with pytest.raises(ValueError, match="unknown rule code 'TD9'"):
        lint_source(text, select=["TD9"])


def test_a_bce_loss_without_a_sigmoid_ended_model_or_with_a_direct_finding_is_not_repeated():
    gan = (
        "import torch\nimport torch.nn as nn\n"
        "class D(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.model = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())\n"
        "    def forward(self, x):\n"
        "        return self.model(x)\n"
    )
    built = "loss_fn = nn.BCELoss()\n"
    assert [(f.line, f.code) for f in lint_source(gan + built)] == [(9, "TD510")]
    plain = gan.replace("nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())", "nn.Linear(4, 1)")
    assert lint_source(plain + built) == []  # no model ends in a sigmoid: nothing to say
    direct = built + "def f(x, y):\n    return loss_fn(torch.sigmoid(x), y)\n"
    assert [(f.line, f.code) for f in lint_source(gan + direct)] == [(11, "TD510")]  # the call


def test_an_encoder_fed_by_an_invariant_module_call_is_one_finding_on_the_encoder() -> None:
    """Seed 001's planner: `self.encoder(vl, self.ego_mlp(ego))` in every denoising step is
    one loop-invariant call, the expensive outer one (not only the cheap MLP inside it)."""
    src = (
        "import torch\n"
        "class Planner(torch.nn.Module):\n"
        "    @torch.no_grad()\n"
        "    def sample(self, vl, ego, x, scheduler):\n"
        "        for t in scheduler.timesteps:\n"
        "            memory = self.encoder(vl, self.ego_mlp(ego))\n"
        "            x = scheduler.step(self.decoder(x, t, memory), t, x).prev_sample\n"
        "        return x\n"
    )
    (finding,) = lint_source(src)
    assert finding.code == "TD601" and (finding.line, finding.column) == (6, 22)
    assert "`self.encoder(vl, self.ego_mlp(ego))` gets the same arguments" in finding.message


def test_td307_leaves_a_numpy_only_file_alone() -> None:
    """egnn's n_body_system/dataset/synthetic_sim.py: a NumPy simulation class slicing its `loc`
    argument per ball (no torch import, no Module): silent; the same method in a file that
    imports torch slices what may be an activation."""
    body = (
        "class SpringSim(object):\n"
        "    def _energy(self, loc, edges):\n"
        "        U = 0\n"
        "        for i in range(loc.shape[1]):\n"
        "            for j in range(loc.shape[1]):\n"
        "                r = loc[:, i] - loc[:, j]\n"
        "                U += edges[i, j] * (r ** 2).sum()\n"
        "        return U\n"
    )
    assert [f.code for f in lint_source("import numpy as np\n" + body)] == []
    assert [f.code for f in lint_source("import torch\n" + body)] == ["TD307", "TD307"]


def test_td302_an_inline_set_in_a_dict_remap_is_one_finding() -> None:
    """{c: i for i, c in enumerate(sorted(set(y.tolist())))}: the set and the dict built from
    .tolist() are one remap, said once."""
    src = (
        "import torch\ndef remap(y):\n"
        "    m = {c: i for i, c in enumerate(sorted(set(y.tolist())))}\n"
        "    return torch.tensor([m[v] for v in y.tolist()])\n"
    )
    assert [(f.line, f.code) for f in lint_source(src) if f.line == 3] == [(3, "TD302")]
