"""TD201: a name read inside the very assignment that rebinds it to a tensor held the old value
at that read (a replay buffer's NumPy batch: `bs = torch.tensor(np.array(bs))`), not the tensor;
a name every binding of which is a tensor is still read on the host."""
import random

import numpy as np
import torch


def train(q, opt, env, buf, steps, device):
    for _ in range(steps):
        buf.append(env.step(random.randrange(2)))
        bs, ba, br = zip(*random.sample(buf, 32))
        bs, ba = torch.tensor(np.array(bs)).to(device), torch.tensor(ba).to(device)
        br = torch.as_tensor(np.asarray(br), device=device)
        loss = (q(bs).gather(1, ba[:, None]).squeeze(1) - br).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pair = torch.stack([loss.detach(), br.mean()])
        print(np.array(pair))  # expect: TD201
