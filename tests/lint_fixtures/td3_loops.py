# TD301 / TD302 / TD303 fixtures.
import lap
import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment as lsa


def segments(x, seg, n_seg, labels, values):
    out = []
    for s in range(n_seg):
        idx = torch.where(seg == s)[0]  # expect: TD301
        out.append(x[idx])
    for v in values:
        out.append(x[labels == v])  # expect: TD301
        out.append((labels == v).nonzero(as_tuple=True)[0])  # expect: TD301
        mask = labels.eq(v)
        out.append(torch.nonzero(mask))  # expect: TD301
    firsts = [torch.where(seg == s)[0][0] for s in range(n_seg)]  # expect: TD301
    return out, firsts


def segments_ok(x, seg, rows):
    idx = torch.where(seg == 0)[0]  # not in a loop
    for s in range(3):
        y = torch.where(seg == s, x, 0.0)  # 3-argument where: no sync
    for row in rows:
        row[row == 0] = 1  # the data itself changes with the loop variable
    return idx, y


def moe_dispatch(hidden, selected_experts, num_experts, experts, weights):
    # Mixtral's eager MoE: one nonzero (host sync) per expert
    out = torch.zeros_like(hidden)
    expert_mask = torch.nn.functional.one_hot(selected_experts, num_experts).permute(2, 1, 0)
    for expert_idx in range(num_experts):
        idx, top_x = torch.where(expert_mask[expert_idx])  # expect: TD301
        out.index_add_(0, top_x, experts[expert_idx](hidden[top_x]) * weights[top_x, idx, None])
    return out


def rows_per_sample(mask, boxes, masks_list):
    kept = []
    for i in range(mask.shape[0]):
        kept.append(boxes[i][mask[i].nonzero()])  # expect: TD301
    for i in range(len(masks_list)):
        kept.append(masks_list[i].nonzero())  # a Python list of tensors: nothing to batch
    return kept


def remap_before(labels):
    y_cpu = labels.detach().to("cpu").numpy().astype(int)
    unique_labels = sorted(set(y_cpu.tolist()))  # expect: TD302
    label_map = {lab: i for i, lab in enumerate(unique_labels)}
    return torch.tensor([label_map[int(v)] for v in y_cpu])


def remap_dict(labels):
    return {v: i for i, v in enumerate(labels.unique().tolist())}  # expect: TD302


def state_index(all_states):
    # near-miss: rows of a GFlowNet's grid as keys, a lookup of vectors, not labels remapped
    return {tuple(s): i for i, s in enumerate(all_states.tolist())}


def remap_after(labels):
    unique_labels = torch.unique(labels)
    y_remapped = torch.zeros_like(labels)
    for idx, label in enumerate(unique_labels):  # expect: TD302
        y_remapped[labels == label] = idx
    return y_remapped


def unique_ok(labels):
    n_classes = len(set(labels.tolist()))  # counting, not remapping
    _, y = torch.unique(labels, return_inverse=True)
    return n_classes, y


def assign(sim, cost_np):
    r, c = lsa(-sim.detach().cpu().numpy())  # expect: TD303
    cost = sim.cpu().numpy()
    r2, c2 = scipy.optimize.linear_sum_assignment(cost)  # expect: TD303
    r3, c3 = lsa(cost_np)  # numpy data from elsewhere
    r4, c4 = lsa(np.ones((3, 3)))
    return r, c, r2, c2, r3, c3, r4, c4


class DetrMatcher(torch.nn.Module):
    @torch.no_grad()
    def forward(self, logits, targets, sizes):
        C = torch.cdist(logits.flatten(0, 1), targets)
        C = C.view(logits.shape[0], logits.shape[1], -1).cpu()
        return [lsa(c[i]) for i, c in enumerate(C.split(sizes, -1))]  # expect: TD303


def match_numpy_costs(costs):
    return [lsa(c) for c in costs]  # host data from the start: fine


def per_class_counts(labels, num_classes):
    counts = [(labels == c).sum() for c in range(num_classes)]  # expect: TD301
    hist = [torch.count_nonzero(labels == k) for k in range(num_classes)]  # expect: TD301
    for img in labels:
        blanks = (img == 0).sum()  # one mask per sample against a constant
    return counts, hist, blanks


def knn_votes(sim_w, sim_labels, num_classes):
    scores = torch.zeros(sim_w.shape[0], num_classes)
    for c in range(num_classes):
        scores[:, c] = (sim_w * (sim_labels == c)).sum(dim=1)  # expect: TD301
    for k in range(num_classes):
        scores[:, k] += (sim_w * sim_labels).sum(dim=1) / (k + 1)  # a weighted sum, no mask per value
    return scores


def strip_prompts(generated, config, vision_start_token_id, tokenizer):
    out = []
    for i, input_ids in enumerate(generated):  # each sample against a special token's id
        starts = torch.argwhere(input_ids == vision_start_token_id)
        pads = (input_ids == config.pad_token_id).sum()
        out.append((starts, pads))
    # (Whisper's decoding: each sequence cut at its end-of-text token)
    return out, [[t[: (t == tokenizer.eot).nonzero()[0, 0]] for t in s] for s in generated]


def boxes_per_level(heat, feat, k, intermediate, head):
    parts = []
    for b in range(heat.shape[0]):  # expect: TD304
        idx = torch.topk(heat[b].flatten(), k).indices
        parts.append(feat[b].flatten(1)[:, idx])
    coords = []
    for lvl in range(intermediate.shape[0]):  # expect: TD304
        tmp = head(intermediate[lvl])
        tmp[..., :2] += 1.0
        coords.append(tmp.sigmoid())
    norms = torch.stack([torch.linalg.vector_norm(feat[i]) for i in range(feat.size(0))])  # expect: TD304
    return torch.stack(parts), torch.stack(coords), norms


def per_item_writes(a, b, x, rows):
    out = torch.zeros_like(a)
    for i in range(a.shape[0]):  # expect: TD304
        out[i] = a[i] * b[i] + 1
    for i in range(x.size(0)):  # expect: TD304
        x[i] = x[i] / x[i].norm()
    scores = torch.empty(rows.shape[0])
    for r in range(rows.shape[0]):  # expect: TD304
        scores[r] = torch.dot(rows[r], a[0])
    return out, x, scores


def per_item_write_near_misses(a, boxes, lengths, images, width):
    mask = torch.zeros(a.shape[0], 10)
    for i in range(mask.shape[0]):  # a constant per row: no op on the item
        mask[i, : lengths[i]] = 1
    points = np.array(boxes)
    for i in range(points.shape[0]):  # a NumPy array, Python scalars
        points[i, 0] = max(0, min(round(points[i, 0] * 2), width))
    for i in range(len(images)):  # a list of images, not a tensor
        images[i] = images[i] * 2
    running = torch.zeros(a.shape[1])
    for i in range(a.shape[0]):  # the write is not per item: a running state
        running = running + a[i]
    return mask, points, images, running


def per_item_near_misses(cell, x, h, data, ix, block):
    outs = []
    for t in range(x.shape[0]):  # a recurrence: h carries from one item to the next
        h = cell(x[t], h)
        outs.append(h)
    host = []
    for i in range(x.shape[0]):  # host work per item
        host.append(torch.tensor(x[i].sum().item()))
    same = torch.stack([x[i] for i in range(x.shape[0])])  # indexing only, no op per item
    batch = torch.stack([torch.from_numpy(data[i : i + block]) for i in ix])  # NumPy rows
    return torch.stack(outs), torch.stack(host), same, batch


def remap_with_a_given_mapping(labels, class_to_index):
    ids = torch.tensor([class_to_index[int(v)] for v in labels])  # expect: TD302
    names = torch.tensor([class_to_index[v] for v in labels.tolist()])  # expect: TD302
    scaled = torch.tensor([w[i] * 2 for i, w in enumerate(labels)])  # no lookup of a label
    return ids, names, scaled


def remap_on_the_host(y):
    _, inverse = np.unique(y.cpu().numpy(), return_inverse=True)  # expect: TD302
    return torch.from_numpy(inverse).to(y.device)


def predict_one_by_one(model, batch):
    outs = []
    for i in range(len(batch)):  # expect: TD304, TD602
        outs.append(model(batch[i:i + 1]))
    return torch.cat(outs)


def pairwise_by_hand(x, centers):
    d = torch.zeros(x.shape[0], centers.shape[0])
    for b in range(x.shape[0]):
        for k in range(centers.shape[0]):  # expect: TD304
            d[b, k] = torch.dist(x[b], centers[k])
    return d


def chunks_of_a_list(model, texts):
    outs = []
    for i in range(len(texts)):  # a slice of many items, not of one: no finding
        outs.append(model(texts[i:i + 8]))
    return torch.cat(outs)


def peaks_per_image(heat, k):
    B = heat.size(0)
    peaks = []
    for b in range(B):  # expect: TD304
        peaks.append(torch.topk(heat[b].flatten(), k).indices)
    return torch.stack(peaks)


def distances_to_mean(z, mu, prec):
    n, d = z.shape
    ds = []
    for i in range(n):  # expect: TD304
        diff = z[i] - mu
        ds.append(diff @ prec @ diff)
    return torch.stack(ds)


def batch_shapes(shapes, batch_size, n_batches):
    s = np.array(shapes)
    ar = s[:, 0] / s[:, 1]
    ar = ar[ar.argsort()]
    bi = np.floor(np.arange(len(ar)) / batch_size).astype(int)
    out = []
    for i in range(n_batches):
        out.append(ar[bi == i].max())  # NumPy arrays on the host: no finding
    return out


def select_per_segment(x, ids, n):
    out = []
    for s in range(n):
        out.append(torch.masked_select(x, torch.eq(ids, s)))  # expect: TD301
    return out


def valid_tokens_per_sample(query, mask):
    batch_size = query.shape[0]
    outs = []
    for idx in range(batch_size):  # items of different sizes (nonzero): no finding
        keep = torch.nonzero(mask[idx]).flatten()
        outs.append(query[idx, keep].sum(0))
    return torch.stack(outs)


def match_with_lap(cost):
    out = []
    for b in range(cost.shape[0]):
        _, x, _ = lap.lapjv(cost[b].detach().cpu().numpy())  # expect: TD303
        out.append(x)
    return out


def per_image_covariances(feats):
    covs = []
    for b in range(feats.shape[0]):  # expect: TD304
        covs.append(torch.cov(feats[b].T))
    return torch.stack(covs)


def normalize_each_row(x):  # the loop walks a tensor's rows
    feats = F.normalize(torch.tanh(x), dim=-1)
    out = []
    for row in feats:  # expect: TD304
        out.append(row / row.norm())
    return torch.stack(out)


def energy_of_each_state(x, w):
    states = torch.tanh(x @ w)
    total = 0.0
    for state in states:  # expect: TD304
        total = total + (state * state).sum()
    return total


def run_in_chunks(model, x):
    pieces = torch.split(x, 64)
    out = []
    for piece in pieces:  # near-miss: chunks bound the memory, by design
        out.append(model(piece))
    return torch.cat(out)


def stack_checkpoint(path):
    records = torch.load(path)
    out = []
    for record in records:  # near-miss: whatever the file holds, not a tensor's items
        out.append(record.float())
    return torch.stack(out)


def walk_names(names):
    out = []
    for name in names:  # near-miss: a parameter, a list as often as a tensor
        out.append(torch.tensor(len(name)))
    return torch.stack(out)


def train_matching_and_remapping(model, loader, opt):
    # the .tolist() / .cpu().numpy() are parts of the remap and the assignment (TD302,
    # TD303), not metric reads: no TD201 beside them (its fix would be LazyMetrics)
    for x, y, targets in loader:
        classes = sorted(set(y.tolist()))  # expect: TD302
        index = {c: i for i, c in enumerate(classes)}
        cost = torch.cdist(model(x), targets)
        rows, cols = lsa(cost.detach().cpu().numpy())  # expect: TD303
        loss = F.cross_entropy(cost[rows], torch.as_tensor(cols)) + len(index)
        print(loss.item())  # expect: TD201
        loss.backward()
        opt.step()


class SparseMoE(torch.nn.Module):
    def forward(self, x, selected, weights):
        out = torch.zeros_like(x)
        expert_mask = F.one_hot(selected, num_classes=self.num_experts).permute(2, 1, 0)
        for e in range(self.num_experts):
            slot, tok = torch.where(expert_mask[e])  # expect: TD301 (its data-dependent shape, TD207, is a part of it)
            out.index_add_(0, tok, self.experts[e](x[tok]) * weights[tok, slot, None])
        return out


ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3}


def to_train_ids(label_map):
    out = torch.full_like(label_map, 255)
    for raw_id, train_id in ID_TO_TRAINID.items():  # expect: TD302 (a fixed mapping, entry by entry)
        out[label_map == raw_id] = train_id
    for raw_id, train_id in ID_TO_TRAINID.items():
        out[label_map == raw_id] = train_id + 1  # expect: TD301 (a value computed: no plain remap)
    return out


def compact_cluster_labels(pseudo_labels):
    valid = sorted(v for v in set(pseudo_labels.tolist()) if v != -1)
    lut = dict(zip(valid, range(len(valid))))
    return torch.tensor([lut.get(v, -1) for v in pseudo_labels.tolist()])  # expect: TD302


def discriminative_pull(embedding, instance_ids, num_instances):
    means = []
    for inst in range(1, num_instances + 1):
        means.append(embedding[:, instance_ids == inst].mean(1))  # expect: TD301
        first = embedding[:, 0:1]  # near-miss: a plain slice
    return torch.stack(means), first


def yolo_build_targets(pred_boxes, gt_boxes, batch_idx, batch_size, pad_idx):
    assigned = []
    for b in range(batch_size):
        gt_b = gt_boxes[batch_idx == b]  # expect: TD301 (a tensor named like an index, per image)
        assigned.append((pred_boxes[b] @ gt_b.T).amax(-1))
    for tokens in pred_boxes:
        keep = tokens[tokens != pad_idx]  # near-miss: each sample against its pad id
        assigned.append(keep.sum())
    return assigned


def face_normals(verts, faces):
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1)


def vertex_count(verts):
    return int(verts.shape[0])


def normals_per_mesh(verts, faces):
    out = []
    for b in range(verts.shape[0]):  # expect: TD304 (a function of the file's torch ops)
        out.append(face_normals(verts[b], faces))
    counts = []
    for b in range(verts.shape[0]):  # near-miss: the function runs no torch op
        counts.append(vertex_count(verts[b]))
    return torch.stack(out), torch.stack([torch.tensor(c) for c in counts])


def bio_to_io(tags, tag_vocab, io_vocab):
    mapping = {i: io_vocab.stoi[t[2:]] for i, t in enumerate(tag_vocab.itos)}
    return torch.tensor([mapping[t] for t in tags.flatten().tolist()], device=tags.device)  # expect: TD302


class ReplayBuffer:
    def sample_class_balanced(self, classes, per_class):
        picks = []
        for c in classes:
            idx = (self.labels[: len(self)] == c).nonzero(as_tuple=True)[0]  # expect: TD301
            picks.append(idx[torch.randint(0, idx.numel(), (per_class,))])
        return torch.cat(picks)


def compact_vocab(train, valid):
    uniq = sorted(set(train.tolist()) | set(valid.tolist()))  # expect: TD302
    remap = {v: i for i, v in enumerate(uniq)}
    return torch.tensor([remap[v] for v in train.tolist()], dtype=torch.long)


def match_per_graph(model, loader, opt, simulate):
    # a graph VAE's matching in its training loop: the solver's columns come back to the
    # device, which solving there (TD303's advice) removes too: one finding, the solver's
    for x, tgt in loader:
        sim = model(x.cuda()) @ tgt.cuda().T
        rows, cols = lsa(-sim.detach().cpu().numpy())  # expect: TD303
        perm = torch.as_tensor(cols, device=sim.device)  # near-miss: TD303's result
        state, r = simulate(perm.tolist())  # expect: TD201
        again = torch.tensor(state, device="cuda")  # expect: TD203
        loss = sim[rows, perm].sum() + again.sum()
        loss.backward()
        opt.step()
