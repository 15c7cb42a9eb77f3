"""TD205 / TD201 on the test of a conditional expression, `a if mask.any() else b` (corpus 31)."""
import torch


class HistoryPool(torch.nn.Module):
    def __init__(self, n, d):
        super().__init__()
        self.emb = torch.nn.Embedding(n, d)

    def forward(self, hist, scale):
        pooled = self.emb(hist).mean(1)
        pooled = pooled / pooled.norm() if (hist > 0).any() else pooled  # expect: TD205
        return pooled * (2.0 if scale > 1 else 1.0)  # near-miss: a Python number's test


def train(model, loader, opt):
    for x, y in loader:
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tag = "nan" if torch.isnan(loss) else "ok"  # expect: TD201
        warm = "warm" if opt.param_groups[0]["lr"] < 1e-3 else "hot"  # near-miss: a float
        print(tag, warm)
