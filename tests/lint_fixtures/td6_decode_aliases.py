# Decoding loops whose model input is named inside a block of the loop (mamba-minimal's demo:
# the whole grown sequence aliased under `with torch.no_grad():`).
import torch
import torch.nn.functional as F


def generate(model, input_ids, n_tokens_to_gen, top_k=40):
    model.eval()
    for token_n in range(n_tokens_to_gen):
        with torch.no_grad():
            indices_to_input = input_ids
            next_token_logits = model(indices_to_input)[:, -1]  # expect: TD604
        probs = F.softmax(next_token_logits, dim=-1)
        next_indices = torch.multinomial(probs, num_samples=1)
        input_ids = torch.cat([input_ids, next_indices], dim=1)
    return input_ids


@torch.no_grad()
def generate_cropped(model, idx, n, block):
    for _ in range(n):
        if idx.size(1) > block:
            ctx = idx[:, -block:]
        else:
            ctx = idx
        logits = model(ctx)[:, -1]  # expect: TD604
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


def generate_recurrent(model, input_ids, n):
    state = None
    for _ in range(n):
        with torch.no_grad():
            logits, state = model(input_ids[:, -1:], state)  # near-miss: one token and the state
        input_ids = torch.cat([input_ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return input_ids
