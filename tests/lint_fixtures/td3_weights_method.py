# DARTS keeps the network's weights apart from its architecture parameters with a method of
# its own, model.weights(); the unrolled step writes the virtual weights one tensor at a time.
import torch


class Architect:
    def virtual_step(self, grads, eta):
        with torch.no_grad():
            for w, vw, g in zip(self.model.weights(), self.virtual.weights(), grads):  # expect: TD305
                vw.copy_(w - eta * (g + self.wd * w))

    def implicit(self, dalpha, hessian, eta):
        for a, g, h in zip(self.model.arch_parameters(), dalpha, hessian):  # near-miss: two alpha tensors
            a.grad = g - eta * h

    def restore(self):
        for w, vw in zip(self.model.weights(), self.virtual.weights()):  # near-miss: a plain copy
            vw.copy_(w)

    def sample(self, sampler):
        for w in sampler.weights(7):  # near-miss: a method with arguments
            w.mul_(2)
