"""A package used by its name that a star import brings (locuslab/TCN's char_cnn_test.py:
``import torch.nn as nn`` binds only ``nn``; ``torch`` comes from ``from utils import *``)."""
import torch.nn as nn
from utils import *

model = nn.Linear(4, 2)


def evaluate(source):
    # near miss: under torch.no_grad(), torch from the star import
    model.eval()
    total = 0.0
    with torch.no_grad():
        for x in source:
            total += model(x).sum()
    return total


def predict(source):
    model.eval()
    outs = []
    for x in source:  # expect: TD602
        outs.append(model(x))
    return outs
