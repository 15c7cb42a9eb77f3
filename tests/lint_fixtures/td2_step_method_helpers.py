# Work a framework's step method hands to other methods of its class, helpers two files away
# reached through a forward, masks joined from a list, and a model output's loss entry.
import torch
import torch.nn.functional as F
from transformers import Trainer


class SampledSoftmaxTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs.pop("labels").cuda()
        out = model.bert(**inputs)
        return self.sampled_softmax_loss(model, out.last_hidden_state, labels)

    def sampled_softmax_loss(self, model, hidden, labels):
        valid = labels.ne(-100)
        present, local = torch.unique(labels.masked_fill(~valid, 0), return_inverse=True)  # expect: TD207
        rows = torch.tensor(present.tolist(), device=labels.device)  # expect: TD203
        logits = hidden @ model.cls.decoder.weight[rows].T
        return F.cross_entropy(logits.flatten(0, 1), local.flatten())

    def generate_samples(self, model, ids):
        keep = ids != 0
        return ids[keep]  # near-miss: no step method calls it


class Evaluator:
    def compute_loss(self, model, inputs):
        labels = inputs.pop("labels")
        return self.masked(model(**inputs).logits, labels)

    def masked(self, logits, labels):
        keep = labels != -100
        return logits[keep]  # near-miss: no Trainer runs this class every step


class DetectionHead(torch.nn.Module):
    def forward(self, boxes, scores, gts):
        fg_masks = []
        for b in range(boxes.shape[0]):
            fg_masks.append(scores[b] > 0.5)
        fg_masks = torch.cat(fg_masks)
        ids, kept = [], []
        for b in range(boxes.shape[0]):
            ids.append(b)
        kept = torch.tensor(ids, device=boxes.device)
        chosen = boxes.flatten(0, 1)[fg_masks]  # expect: TD207
        return chosen.sum() + boxes[kept].sum()  # near-miss: a list of ints, not of masks


def train(model, loader, opt):
    for imgs, labels in loader:
        imgs, labels = imgs.cuda(non_blocking=True), labels.cuda(non_blocking=True)
        out = model(imgs, labels)
        out["total_loss"].backward()
        opt.step()
        opt.zero_grad()
        iou = float(out["iou_loss"])  # expect: TD201
        steps = float(out["num_steps"])  # near-miss: not a loss or logits entry
        print(iou, steps)


def train_with_stats(model, loader, opt, stats):
    for imgs, labels in loader:
        loss = model(imgs.cuda(), labels.cuda())
        loss.backward()
        opt.step()
        running = float(stats["loss"])  # near-miss: stats is no model output
        print(running)
