"""Rule embedding-gradient: an nn.Embedding whose backward is many times its forward (a dense
table-sized gradient at each call, the seq2seq tutorial's one-token lookups): sparse=True."""

from __future__ import annotations

import pytest
from reports_sessions_crafted import embedding_gradient_session

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.dominant import dominant_module
from torchdoctor.analyze.advice.embedding_gradient import embedding_gradient


def test_the_embeddings_of_both_models_are_told_with_their_backward_less_forward():
    (item,) = embedding_gradient(embedding_gradient_session())
    assert item.title.startswith("2 embeddings' backward is up to 20x their forward")
    assert "(Enc.emb, Dec.emb)" in item.title  # heaviest first, named with their model
    assert item.estimated_saving_ms == pytest.approx((8.9 - 0.44) + (5.1 - 0.27))
    assert item.saving_range_ms[1] == pytest.approx(8.9 + 5.1)
    assert item.confidence == "medium" and "sparse=True" in item.fix


def test_an_optimizer_refusing_sparse_gradients_lowers_the_confidence():
    (item,) = embedding_gradient(embedding_gradient_session(optimizer="AdamW"))
    assert item.confidence == "low" and item.estimated_saving_ms > 0
    assert any("AdamW refuses sparse gradients" in e for e in item.evidence)


def test_an_embedding_with_a_head_as_large_as_its_table_is_not_told():
    """A language model's head tied to its token embedding: its gradient is dense anyway."""
    (item,) = embedding_gradient(embedding_gradient_session(head_params=723200))
    assert item.title.startswith("Enc.emb (Embedding) backward is 20x its forward")
    assert item.estimated_saving_ms == pytest.approx(8.9 - 0.44)


def test_silent_when_the_backward_is_not_many_times_the_forward():
    session = embedding_gradient_session()
    for node in session["tree"]["children"][:2]:
        for child in node["children"]:
            if child.get("type") == "Embedding":
                child["forward_ms"] = {"median": 3.0, "mean": 3.0}  # backward under 4x
    assert embedding_gradient(session) == []


def test_it_joins_the_dominant_module_advice_for_the_same_embedding():
    session = embedding_gradient_session()
    table = session["tree"]["children"][0]["children"][0]
    table["backward_ms"] = table["total_ms"] = {"median": 20.0, "mean": 20.0}  # 40% of the step
    (dominant,) = [a for a in dominant_module(session) if a.cause == "embedding-gradient"]
    assert "emb (Embedding) dominates the step" in dominant.title
    found = [a for a in advise(session) if a.cause == "embedding-gradient"]
    assert len(found) == 1 and found[0].rule == "embedding-gradient"


def test_a_measured_table_states_its_measured_saving_at_most_its_backward():
    """The profiler timed the step's calls on the table both ways: that saving, not backward
    less forward (the tree's backward of a first layer runs to the next mark)."""
    session = embedding_gradient_session()
    table = session["tree"]["children"][0]["children"][0]  # Enc.emb: 8.9 ms backward
    table["embedding"] = {"rows": 1, "table": [4310, 256], "calls": 7, "bag": False,
                          "measured": {"dense_ms": 3.2, "sparse_ms": 0.4, "reps": 5}}  # fmt: skip
    (item,) = embedding_gradient(session)
    assert item.estimated_saving_ms == pytest.approx(2.8 + (5.1 - 0.27))
    assert any("measured on its own 4310 x 256 table, 7 calls" in e for e in item.evidence)
    table["embedding"]["measured"]["dense_ms"] = 40.0  # (a busier machine at the probe)
    (item,) = embedding_gradient(session)
    assert item.estimated_saving_ms == pytest.approx(8.9 + (5.1 - 0.27))
