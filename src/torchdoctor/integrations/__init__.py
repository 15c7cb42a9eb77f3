"""Adapters onto the profiler for the places users already work.

- :mod:`torchdoctor.integrations.lightning`: ``TorchDoctorCallback`` for ``lightning.Trainer``;
- :mod:`torchdoctor.integrations.huggingface`: ``TorchDoctorCallback`` for ``transformers.Trainer``;
- :mod:`torchdoctor.integrations.trackers`: MLflow and Weights & Biases logging.

Each imports its framework only when used (the frameworks are optional extras).
"""
