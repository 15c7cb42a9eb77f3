"""TD307 and a slice that holds indices: assigned to a name an embedding looks up (corpus 31)."""
import torch


class SessionEncoder(torch.nn.Module):
    def __init__(self, n_items, dim):
        super().__init__()
        self.item_emb = torch.nn.Embedding(n_items, dim)
        self.cell = torch.nn.GRUCell(dim, dim)

    def forward(self, hist, x):
        h = torch.zeros(hist.shape[0], self.cell.hidden_size)
        for t in range(hist.shape[1]):
            step_items = hist[:, t]  # near-miss: item ids, looked up in an embedding below
            h = self.cell(self.item_emb(step_items), h)
        for t in range(hist.shape[1]):
            seen = hist[:, t]  # near-miss: item ids, looked up through a mask below
            h = h + self.item_emb(seen[seen > 0]).sum(0)
        for t in range(x.shape[1]):
            x_t = x[:, t]  # expect: TD307
            h = self.cell(x_t * 2, h)
        return h
