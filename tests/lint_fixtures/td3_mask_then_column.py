# A mask per value beside a column index or a slice still scans every row once per value:
# Poincare embeddings' reconstruction takes each source node's targets this way.
import numpy as np
import torch


def targets_per_source(edges, device):
    edges_t = torch.from_numpy(edges).to(device)
    out = []
    for u in np.unique(edges[:, 0]):
        out.append(edges_t[edges_t[:, 0] == int(u), 1])  # expect: TD301
        out.append(edges_t[edges_t[:, 0] == int(u), 0:2])  # expect: TD301
    return out


def near_misses(edges_t, order, sources, k):
    out = []
    for u in sources:
        out.append(edges_t[order[u], 1])  # near-miss: an index, not a mask
        out.append(edges_t[edges_t[:, 0] > 0, k])  # near-miss: the mask does not read the value
    return out


def annotations_per_label(generator, num_classes):  # yhenon's RetinaNet csv_eval
    all_annotations = []
    for i in range(len(generator)):
        annotations = generator.load_annotations(i)
        per_label = [None] * num_classes
        boxes = torch.as_tensor(annotations)
        for label in range(num_classes):
            per_label[label] = annotations[annotations[:, 4] == label, :4].copy()  # near-miss: NumPy's copy
            per_label[label] = boxes[boxes[:, 4] == label, :4].clone()  # expect: TD301
        all_annotations.append(per_label)
    return all_annotations
