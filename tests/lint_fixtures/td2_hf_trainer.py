# TD201 / TD207 in a Hugging Face Trainer's compute_loss: the Trainer calls it every step.
import torch.nn.functional as F
from transformers import Trainer

DEVICE = "cuda"


class MaskedLMTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        keep = labels != -100
        loss = F.cross_entropy(outputs.logits[keep], labels[keep])  # expect: TD207
        self.last_loss = loss.item()  # expect: TD201
        return (loss, outputs) if return_outputs else loss


class Scorer:
    def compute_loss(self, model, inputs):
        loss = model(**inputs).loss
        self.last_loss = loss.item()  # near-miss: no Trainer calls this every step
        return loss
