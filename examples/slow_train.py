"""A small training script with three classic slow-step patterns, for trying torchdoctor.

    torchdoctor run examples/slow_train.py      # profile it unmodified (`lint`: statically)

1. labels remapped through Python containers every step (seed 002);
2. a per-sample Mahalanobis distance with one `linalg.solve` per sample (seed 000);
3. `.item()` on every loss every step (seed 002).
"""

import torch
from torch import nn

torch.manual_seed(0)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
num_samples, dim, classes = 2048, 32, 10
features = torch.randn(num_samples, dim, device=device)
raw_labels = torch.randint(0, classes, (num_samples,), device=device) * 7 + 100  # sparse ids


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)
        return z, self.head(z)


def mahalanobis_penalty(z: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    total = z.new_zeros(())
    for i in range(z.shape[0]):  # one solve per sample: the matrix never changes in the loop
        total = total + z[i] @ torch.linalg.solve(cov, z[i])
    return total / z.shape[0]


model = Encoder().to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
running = 0.0
for _ in range(20):
    index = torch.randint(0, num_samples, (64,))
    x, y_raw = features[index], raw_labels[index]
    mapping = {value: i for i, value in enumerate(sorted(set(y_raw.tolist())))}
    y = torch.tensor([mapping[v] for v in y_raw.tolist()], device=device)

    z, logits = model(x)
    cov = torch.cov(z.detach().T) + 0.1 * torch.eye(z.shape[1], device=device)
    loss = nn.functional.cross_entropy(logits, y) + 0.01 * mahalanobis_penalty(z, cov)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    running += loss.item()
print(f"mean loss {running / 20:.3f}")
