# Lottery-ticket training re-applies its pruning masks after every optimizer step, one
# parameter at a time; the membership test only skips the layers that are not pruned.
# A test on the name's text (weight decay on weights only) is control flow, not a filter,
# and the masks applied once by a multi-tensor op are the cure.
import torch


class Ticket:
    def on_train_batch_end(self, outputs, batch, i):
        with torch.no_grad():
            for name, p in self.model.named_parameters():  # expect: TD305
                if name in self.masks:
                    p.mul_(self.masks[name])

    def skip_unmasked(self, masks):
        for name, p in self.model.named_parameters():  # expect: TD305
            if name not in masks:
                continue
            p.data.mul_(masks[name])

    def decay(self, lr):
        for name, p in self.model.named_parameters():  # near-miss: a test on the name's text
            if "bias" in name:
                p.data.add_(p.grad, alpha=-lr)

    def apply_once(self, masks):
        params = [p for n, p in self.model.named_parameters() if n in masks]
        torch._foreach_mul_(params, [masks[n] for n in masks])  # near-miss: one multi-tensor op
