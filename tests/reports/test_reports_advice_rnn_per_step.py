"""Rule rnn-per-step: an nn.GRU / nn.LSTM / nn.RNN module called several times per step (the
seq2seq tutorial's encoder, one call per token): pass the whole sequence in one call."""

from __future__ import annotations

import pytest
from reports_sessions_crafted import rnn_per_step_session

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.rnn_per_step import rnn_per_step


def test_a_sequence_module_called_per_token_is_told_to_take_the_sequence():
    (item,) = rnn_per_step(rnn_per_step_session())
    assert item.title.startswith("encoder.gru (GRU) is called 6.3 times per step")
    assert item.estimated_saving_ms is None and item.confidence == "low"
    assert "teacher forcing" in item.fix and "feeds its own" in item.fix
    assert item.cause == "rnn-sequence" and 0.1 < item.heat < 0.2


@pytest.mark.parametrize("calls, kind", [(1.0, "GRU"), (3.0, "LSTM"), (6.3, "GRUCell")])
def test_silent_for_one_call_a_step_or_a_cell(calls, kind):
    assert rnn_per_step(rnn_per_step_session(calls=calls, kind=kind)) == []


def test_it_ranks_among_the_advice_once():
    found = [a for a in advise(rnn_per_step_session()) if a.rule == "rnn-per-step"]
    assert len(found) == 1


def test_with_two_models_the_module_is_named_with_its_models():
    """The tutorial's encoder and decoder are two top-level modules; the first one's paths are
    its own ("gru"), which read as either model's."""
    from reports_sessions import node

    session = rnn_per_step_session()
    gru = node("gru", 2.2, 4.4, type="GRU", calls=6.3)
    encoder = node("EncoderRNN", 3.8, 7.9, type="EncoderRNN", children=[gru], calls=6.3)
    decoder = node("AttnDecoderRNN", 5.0, 4.0, type="AttnDecoderRNN", calls=5.0)
    session["tree"]["children"] = [encoder, decoder]
    (item,) = rnn_per_step(session)
    assert item.title.startswith("EncoderRNN.gru (GRU) is called 6.3 times per step")
