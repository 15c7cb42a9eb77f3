import torch


def f(A, B):
    x = torch.linalg.inv(A) @ B  # noqa: TD101
    y = torch.linalg.inv(A) @ B  # noqa
    z = torch.linalg.inv(A) @ B  # noqa: TD2
    return x, y, z
