"""TD602 evaluation loops that run the model through a helper, or sample it with dropout on."""

import torch


def predict_batch(net, x):
    return net(x).argmax(-1)


def log_weights(net, step):
    return {name: p.norm().item() for name, p in net.named_parameters()}


def evaluate_through_a_helper(model, loader):
    model.eval()
    correct = 0
    for x, y in loader:  # expect: TD602 (the model runs in predict_batch)
        correct += (predict_batch(model, x) == y).sum()
    return correct


def evaluate_logging_only(model, loader, logger):
    model.eval()
    for step, _ in enumerate(loader):  # the helper only reads the weights
        logger.log(log_weights(net=model, step=step))


def mc_dropout_probs(model, loader, samples):
    model.train()  # keep dropout on: Monte Carlo dropout
    probs = []
    for x, _ in loader:  # expect: TD602 (sampled in train mode, nothing trained)
        probs.append(torch.stack([model(x).softmax(-1) for _ in range(samples)], 1))
    return torch.cat(probs)


def run_epoch(model, loader, opt):
    model.train()  # near-miss: it trains (an optimizer, a loss)
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def greedy_decode_nocache(model, src, bos, max_len=200):
    mem, mask = model.encode(src)
    ys = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
    for _ in range(max_len):
        logits = model.decode(ys, mem, mask)  # expect: TD604 (mem: the encoder's output, no cache)
        ys = torch.cat([ys, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ys


@torch.no_grad()
def greedy_decode_cached(model, src, bos, max_len=200):
    mem, mask = model.encode(src)
    ys = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
    caches = [dict() for _ in model.decoder]
    for step in range(max_len):
        logits = model.decode(ys[:, -1:], mem, mask, caches, offset=step)  # near-miss: cached
        ys = torch.cat([ys, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ys


def test_episodes(model, loader, shot, device):
    model = model.to(device).eval()
    accs = []
    for images, labels in loader:  # expect: TD602
        logits = model.logits(images.to(device), shot)
        accs.append((logits.argmax(1) == labels.to(device)).float().mean())
    return torch.stack(accs).mean()


@torch.no_grad()
def evaluate_episode(model, env, state_dim, act_dim, device, max_len=1000):
    states = torch.zeros((1, state_dim), device=device)
    actions = torch.zeros((0, act_dim), device=device)
    for t in range(max_len):
        actions = torch.cat([actions, torch.zeros((1, act_dim), device=device)], dim=0)
        action = model.get_action(states, actions)  # expect: TD604
        state, reward, done, _ = env.step(action.cpu().numpy())
        states = torch.cat([states, torch.as_tensor(state, device=device)[None]], dim=0)
        if done:
            break
    return states


@torch.no_grad()
def next_items(session_model, history, steps):
    for _ in range(steps):
        hidden = session_model.encode(history)  # expect: TD604 (the whole history re-encoded)
        best = session_model.rank(hidden[:, -1]).argmax(-1, keepdim=True)
        history = torch.cat([history, best], dim=1)
    return history


@torch.no_grad()
def retrieve(session_model, query, pool, rounds):
    for _ in range(rounds):
        q = session_model.encode(query)  # near-miss: the query is fixed, the pool grows
        pool = torch.cat([pool, q[:, -1:]], dim=1)  # expect: TD306 (grown, never encoded)
    return pool


def restore_denoiser(path):
    net = torch.load(path, weights_only=False)
    return net.eval()


def clean_stream(reader, path, chunked):
    net = None
    chunk = reader.next_chunk()
    while chunk is not None:  # expect: TD602 (the net comes ready for inference, inside the loop)
        if net is None or chunked:
            net = restore_denoiser(path)
        reader.write(net(chunk))
        chunk = reader.next_chunk()


def finetune_stream(reader, path, opt):
    net = None
    chunk = reader.next_chunk()
    while chunk is not None:  # near-miss: it trains (a backward every chunk)
        if net is None:
            net = restore_denoiser(path)
        net(chunk).pow(2).mean().backward()
        opt.step()
        chunk = reader.next_chunk()


@torch.no_grad()
def ensemble_scores(checkpoints, x):
    net = Denoiser().eval()
    total = 0
    for path in checkpoints:
        net.load_state_dict(torch.load(path))
        total = total + net(x).softmax(-1)
    return total / len(checkpoints)  # (the scores, not the model it put in eval mode)


def score_recordings(recordings, checkpoints):
    for x in recordings:  # near-miss: the models run inside ensemble_scores, under no_grad
        prob = ensemble_scores(checkpoints, x)
        print(prob.argmax(-1).cpu().numpy())
