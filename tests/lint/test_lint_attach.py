"""Attaching findings to a Session (plain dict or object) for the advice layer."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from torchdoctor.lint import Finding, attach_findings, findings_at, lint_source

SRC = (
    "import torch\n"
    "def train(model, loader, opt):\n"
    "    for x in loader:\n"
    "        loss = model(x)\n"
    "        loss.backward()\n"
    "        opt.step()\n"
    "        print(loss.item())\n"
)


def test_attach_to_session_dict_roundtrips_json() -> None:
    findings = lint_source(SRC, path="train.py")
    assert [f.code for f in findings] == ["TD201"]
    session = {"schema_version": 1, "lint": []}
    attach_findings(session, findings)
    attach_findings(session, [f.to_dict() for f in findings])  # duplicates skipped
    restored = json.loads(json.dumps(session))
    assert [Finding.from_dict(d) for d in restored["lint"]] == findings
    assert [f["code"] for f in findings_at(session, "train.py", 7)] == ["TD201"]
    assert findings_at(session, "train.py", 6) == []
    assert findings_at(session, "other.py", 7) == []


def test_attach_to_objects() -> None:
    f = Finding("TD202", "warning", "m", "a.py", 1, 1, 1, 2)
    holder = SimpleNamespace(lint=[])
    assert attach_findings(holder, [f]).lint == [f.to_dict()]
    wrapped = SimpleNamespace(data={"schema_version": 1})
    assert attach_findings(wrapped, [f]).data["lint"] == [f.to_dict()]
    with pytest.raises(TypeError, match="Session dict"):
        attach_findings(42, [f])
    with pytest.raises(ValueError, match="lacks"):
        attach_findings({}, [{"code": "TD202"}])


def test_attach_to_a_session_object():
    from torchdoctor.lint import attach_findings, lint_source
    from torchdoctor.session import Session

    session = Session.new(label="train.py")
    findings = lint_source("import torch\nx = torch.linalg.inv(a) @ b\n", path="train.py")
    assert findings
    attach_findings(session, findings)
    assert [f["code"] for f in session["lint"]] == [f.code for f in findings]
    attach_findings(session, findings)  # duplicates are skipped
    assert len(session["lint"]) == len(findings)
