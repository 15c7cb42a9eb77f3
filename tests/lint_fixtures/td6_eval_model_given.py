# A helper handed a model its caller put in eval mode by a statement (model.eval()) runs
# inference: its loop records a graph for nothing. A model handed over before .eval(), or
# one the caller trains, is no evaluation.
import torch
from embed import Embedder


def depth(model, vocab, words):
    rows = []
    for w in words:  # expect: TD602
        e = model.emb(torch.tensor([vocab[w]]))
        rows.append(e.norm())
    return rows


def adapt(model, vocab, words):
    rows = []
    for w in words:  # near-miss: handed over before model.eval()
        rows.append(model(torch.tensor([vocab[w]])))
    return rows


def main(state, vocab, words):
    model = Embedder(len(vocab))
    model.load_state_dict(state)
    adapt(model, vocab, words)
    model.eval()
    for w, r in zip(words, depth(model, vocab, words)):
        print(w, r)
