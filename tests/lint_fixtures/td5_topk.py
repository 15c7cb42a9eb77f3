# TD512 fixtures: a full sort read only up to k.
import torch


def best_parts(scores, k):
    values, idx = torch.sort(scores, descending=True)  # expect: TD512
    return values[:k], idx[:k]


def nearest(dist, k):
    order = dist.argsort(dim=-1)  # expect: TD512
    return order[..., :k]


def lowest_rows(x, k):
    idx = torch.argsort(x, dim=1)  # expect: TD512
    return idx[:, 0:k]


def top_p(logits, p):
    # nucleus sampling needs the whole order (a cumulative sum): no finding
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    keep = cumulative <= p
    return sorted_idx[keep]


def median_of(x):
    values, _ = torch.sort(x)
    return values[x.shape[0] // 2]  # an element, not a leading slice: no finding


def ranks(x):
    order = x.argsort()
    return order  # the whole order: no finding


def keep_tokens(dissimilarity, keep):
    order = torch.argsort(dissimilarity, descending=True, stable=True)  # ties in order: no finding
    return order[:keep]


def top5(probs, preds, boxes, max_nms):
    best = (-probs).argsort(0)[:5]  # expect: TD512
    n5 = preds.argsort(1, descending=True)[:, :5]  # expect: TD512
    keep = boxes[:, 4].argsort(descending=True)[:max_nms]  # expect: TD512
    first = torch.sort(boxes[:, 4], descending=True)[0][:max_nms]  # expect: TD512
    across = preds.argsort(0)[:, :5]  # the slice cuts another dimension: no finding
    return best, n5, keep, first, across


def knn_graph(x, k):
    dist = torch.cdist(x, x)
    return torch.argsort(dist, dim=-1)[:, :, 1 : k + 1]  # expect: TD512 (the k nearest but itself)


def tail_of_the_order(x, k):
    return torch.argsort(x, dim=-1)[..., k:]  # near-miss: every element but the first k


def top_rebound(logits, k):
    vals, idx = torch.sort(logits, descending=True)  # expect: TD512 (rebound to its slice)
    vals, idx = vals[..., :k], idx[..., :k]
    return vals.softmax(-1), idx


def top_rebound_argsort(logits, k):
    idx = torch.argsort(logits, dim=-1, descending=True)  # expect: TD512
    idx = idx[..., :k]
    return logits.gather(-1, idx), idx


def reversed_order(logits):
    idx = torch.argsort(logits, dim=-1)  # near-miss: all of it read, reversed
    idx = idx.flip(-1)
    return idx


def pre_nms_top(boxes, scores, pre_nms_top_n):
    order = scores.argsort(descending=True)  # expect: TD512 (its size only measured besides)
    if order.numel() > pre_nms_top_n:
        order = order[:pre_nms_top_n]
    return boxes[order]


def extremes(scores, k, largest):
    if largest:
        idx = torch.argsort(scores, descending=True)  # expect: TD512 (sorted in either branch)
    else:
        idx = torch.argsort(scores)  # expect: TD512
    return idx[:k]


def ranked_with_count(scores, k):
    order = scores.argsort(descending=True)  # near-miss: the whole order is returned too
    if len(order) > k:
        return order[:k], order
    return order, order


def simota_dynamic_k(ious, cost, n_candidate_k=10):
    sorted_ious, _ = torch.sort(ious, dim=1, descending=True)  # expect: TD512
    dynamic_ks = sorted_ious[:, :n_candidate_k].sum(1).int().clamp(min=1)
    _, pos = torch.topk(cost, k=3, largest=False)  # (`_` discarded again: not the sort's)
    return dynamic_ks, pos


def ohem_negatives(negative_loss, negative_count):
    negative_loss, _ = torch.sort(negative_loss, descending=True)  # expect: TD512
    negative_loss = negative_loss[:negative_count]
    return negative_loss.sum()


def top_k_sample(probs, k):
    probs, idx = torch.sort(probs, descending=True)  # expect: TD512
    probs, idx = probs[:k], idx[:k]
    return idx[torch.multinomial(probs / probs.sum(), 1)]


def nearest_patches(dist, k):
    sorted_d, sorted_i = dist.sort(dim=1)  # expect: TD512
    return sorted_d[:, 0], sorted_i[:, :k]


def first_rows(x):
    values, order = x.sort()
    return values[0], order[0]  # near-miss: row 0 of a 2-D sort, all of it


def top_k_threshold(logits, top_k):
    sorted_logits = logits.sort(dim=-1, descending=True).values  # expect: TD512
    thresh = sorted_logits[..., :top_k].min(dim=-1, keepdim=True).values
    return logits.masked_fill(logits < thresh, float("-inf"))


def top_p_threshold(logits, top_p):
    sorted_probs = torch.sort(logits.softmax(-1), dim=-1, descending=True)[0]  # near-miss: the whole order
    return sorted_probs.cumsum(-1) > top_p


def clam_instances(scores, h, k):
    order = torch.argsort(scores, descending=True)  # expect: TD512 (both ends: two topk calls)
    return h[order[:k]], h[order[-k:]]


def drop_extremes(scores, h, k):
    order = torch.argsort(scores)  # near-miss: the middle is read too
    return h[order[:k]], h[order[k:-k]], h[order[-k:]]
