# TD104 fixtures: a Jacobian or Hessian built one output element at a time.
import torch
import torch.autograd.functional as AF
from torch.autograd.functional import hessian, jacobian
from torch.func import jacrev


def regulariser(f, x, w, args):
    H = hessian(lambda v: f(v).sum(), w, create_graph=True)  # expect: TD104
    J = AF.jacobian(f, x)  # expect: TD104
    J0 = torch.autograd.functional.jacobian(f, x, vectorize=False)  # expect: TD104
    J1 = torch.autograd.functional.jacobian(f, x, vectorize=True)
    J2 = jacobian(f, x, False, False, True)  # (vectorize given fifth)
    J3 = jacobian(f, x, strategy="forward-mode", vectorize=True)
    J4 = jacobian(f, x, vectorize=args.vectorize)  # (the script decides)
    J5 = jacrev(f)(x)
    J6 = torch.func.hessian(f)(x)
    return H, J, J0, J1, J2, J3, J4, J5, J6


class Model:
    def jacobian(self, f, x):  # a method of the same name is not torch's
        return self.jacobian(f, x)
