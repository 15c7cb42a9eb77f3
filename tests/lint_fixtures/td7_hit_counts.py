# Hits counted across steps carry no graph: a comparison of the logits (or their argmax) is
# boolean, even when the logits and the labels also feed the loss. A loss summed across steps,
# masked by a comparison or not, still keeps every step's graph.
import torch.nn.functional as F


def train(model, loader, opt, reg):
    correct, total, kept, picks = 0, 0, [], []
    for x, y in loader:
        logits = model(x)
        loss = F.cross_entropy(logits, y) + reg(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        correct += (logits.argmax(1) == y).sum()  # near-miss: hits are booleans
        picks.append(logits.argmax(1))  # near-miss: indices carry no graph
        total += loss  # expect: TD708
        kept.append(loss * (y > 0).float().mean())  # expect: TD708
    return correct, total, kept, picks
