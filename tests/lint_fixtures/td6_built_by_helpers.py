"""TD604 on a parameter that every caller fills with what a helper of the file returns: a
Module it builds (a VQ-VAE's prior, corpus 31), or something else (no model: silent)."""
import torch


class Prior(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 4)

    def forward(self, seq):
        return self.net(seq.float())


def build_prior(device):
    prior = Prior().to(device)
    return prior


def load_table(path):
    table = torch.load(path)
    return table


def sample(prior, seq, steps):
    for _ in range(steps):  # expect: TD602
        logits = prior(seq)  # expect: TD604
        seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
    return seq


def lookup(table, seq, steps):
    for _ in range(steps):
        logits = table(seq)  # near-miss: what load_table returns is no Module of the project
        seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
    return seq


def main(device):
    prior = build_prior(device)
    print(sample(prior, torch.zeros(1, 1, dtype=torch.long), 8))
    table = load_table("table.pt")
    print(lookup(table, torch.zeros(1, 1, dtype=torch.long), 8))
