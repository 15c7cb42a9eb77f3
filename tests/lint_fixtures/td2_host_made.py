"""TD201: a tensor made on the host from Python data (a list, a list comprehension, a list a
helper of the file builds and returns) is read back with no host-device sync."""
import torch


def flags_of(smiles):
    ok = [len(s) > 0 for s in smiles]
    return torch.zeros(len(smiles), 4), torch.tensor(ok)


def score(smiles, model, device):
    fp, ok = flags_of(smiles)
    act = model(fp.to(device))
    sizes = torch.tensor([len(s) for s in smiles])
    valid = [v for v in ok.tolist()]  # near-miss: made on the host by flags_of from a list
    longest = [v for v in sizes.tolist()]  # near-miss: made on the host from a list comprehension
    top = act.max().item()  # expect: TD201
    return act, valid, longest, top


def train(model, opt, batches, device):
    for smiles in batches:
        act, valid, longest, top = score(smiles, model, device)
        loss = act.sum()
        loss.backward()
        opt.step()
