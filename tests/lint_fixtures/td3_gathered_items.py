# Rows gathered by the batch's ids (memory[nodes]) and joined with other features along a later
# dimension (torch.cat(..., 1)) keep one row per id: a loop over the ids running a module on each
# row and stacking the results is a per-item loop (TGN's neighbour attention, node by node).
import torch


class Embed(torch.nn.Module):
    def per_node(self, nodes, ts, nbr):
        q = self.q_proj(torch.cat([self.memory[nodes], self.time_enc(ts)], 1))
        kv = self.kv_proj(torch.cat([self.memory[nbr], self.time_enc(ts)[:, None]], -1))
        h = []
        for i in range(nodes.shape[0]):  # expect: TD304
            a, _ = self.attn(q[i][None, None], kv[i][None], kv[i][None])
            h.append(a[0, 0])
        return self.out(torch.cat([torch.stack(h), self.memory[nodes]], 1))

    def in_turn(self, nodes, ts):
        q = self.q_proj(torch.cat([self.memory[nodes], self.time_enc(ts)], 1))
        state, h = torch.zeros_like(q[0]), []
        for i in range(nodes.shape[0]):  # near-miss: each row updates the state the next reads
            state = self.cell(q[i], state)
            h.append(state)
        return torch.stack(h)
