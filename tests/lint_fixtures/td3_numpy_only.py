# NumPy / pandas code with the shapes of TD301/TD302 loops: no torch here, nothing to report.
import numpy as np


def class_means(X, y):
    return {c: X[y == c].mean(0) for c in np.unique(y)}


def per_label(df):
    out = {}
    for cls in df["label"].unique():
        out[cls] = df[df["label"] == cls]
    return out
