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


def train_sampled(nnet, opt, examples, steps, cuda):  # alpha-zero-general's NNet.train
    for _ in range(steps):
        boards, pis = list(zip(*random.sample(examples, 32)))
        boards = torch.FloatTensor(np.array(boards).astype(np.float64))  # near-miss: read before the rebinding
        target_pis = torch.FloatTensor(np.array(pis))
        if cuda:
            boards, target_pis = boards.contiguous().cuda(), target_pis.contiguous().cuda()
        loss = -(target_pis * nnet(boards)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(np.array(loss))  # expect: TD201
