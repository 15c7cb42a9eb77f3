# TD602 at a script's top level: an inference script with no function around its loop.
import torch
from torch.utils.data import DataLoader

from model import TestSet, build_model

if __name__ == "__main__":
    model = build_model()
    model.load_state_dict(torch.load("best.pt", map_location="cpu"))
    model.eval()
    loader = DataLoader(TestSet("test/"), batch_size=64, num_workers=4, persistent_workers=True)
    preds = []
    for batch in loader:  # expect: TD602 (no TD304: a loader's batches, not a tensor's items)
        preds.append(model(batch).argmax(1))
    torch.save(torch.cat(preds), "preds.pt")
    with torch.inference_mode():
        for batch in loader:  # near-miss: under inference_mode
            preds.append(model(batch).argmax(1))
    scores = torch.randn(8, 16)
    for row in scores:  # near-miss: no model call in it
        print(row.max())
