"""TD201 and names bound to methods of a NumPy call's result (MAML-Pytorch's csmlv0: the
tasks' results gathered from worker processes, ``np.array([...]).mean()``, then printed each
meta-step): NumPy numbers on the host, no sync; a torch chain's result still is a tensor."""
import numpy as np
import torch


class Learner:
    def train(self, x, queue, n):
        data = [queue.get_nowait() for _ in range(n)]
        accuracy = np.array([d[2] for d in data]).mean()
        meta_loss = np.array([d[1] for d in data]).astype(np.float32).sum()
        print("acc:", accuracy, "meta-loss:", meta_loss)  # near-miss: NumPy's numbers
        loss = self.net(x.cuda()).sum()
        loss.backward()
        self.optimizer.step()
        acc = torch.stack([d[2] for d in data]).mean()
        print("acc:", acc)  # expect: TD201
