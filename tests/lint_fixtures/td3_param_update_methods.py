"""TD305 over a parameter list a method of the class returns (MoCo with a projection head:
``zip(self.parameters_q(), self.parameters_k())``, each a ``list(...) + list(...)`` of the
encoder's and the head's parameters), updated by ``.data =`` assignment every forward."""
import torch
import torch.nn as nn


class MoCo(nn.Module):
    def __init__(self, enc_q, enc_k, head_q, head_k, m=0.999):
        super().__init__()
        self.encoder_q, self.encoder_k, self.head_q, self.head_k, self.m = enc_q, enc_k, head_q, head_k, m
        for param_q, param_k in zip(self.parameters_q(), self.parameters_k()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False

    def parameters_q(self):
        return list(self.encoder_q.parameters()) + list(self.head_q.parameters())

    def parameters_k(self):
        return list(self.encoder_k.parameters()) + list(self.head_k.parameters())

    def blocks(self):
        return [self.encoder_q, self.head_q]

    @torch.no_grad()
    def _momentum_update(self):
        for param_q, param_k in zip(self.parameters_q(), self.parameters_k()):  # expect: TD305
            param_k.data = param_k.data * self.m + param_q.data * (1.0 - self.m)

    @torch.no_grad()
    def _freeze_blocks(self):
        for block in self.blocks():
            block.weight.data = block.weight.data * 0.5

    def forward(self, x):
        self._momentum_update()
        self._freeze_blocks()
        return self.head_q(self.encoder_q(x))
