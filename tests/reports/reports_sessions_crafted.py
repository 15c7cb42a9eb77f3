"""Crafted sessions for the rules that read the tree's (self) rows, the hot lines, torch's own
syncs and the collectives (test_reports_advice.py's CRAFTED: each rule fires on its own)."""

from __future__ import annotations

from reports_sessions import slow_session


def unattributed_session():
    """The slow session with most of the step in the root's (self): functional code."""
    session = slow_session()
    rest = next(c for c in session["tree"]["children"] if c["kind"] == "self")
    rest["forward_ms"] = {"median": 80.0, "mean": 80.0}
    rest["backward_ms"] = {"median": 40.0, "mean": 40.0}
    return session


def communication_session():
    """The slow session as one DDP rank all-reducing its gradients twice per optimizer step."""
    session = slow_session()
    bucket = {"kind": "all_reduce", "site": {"file": "DDP gradient bucket", "line": 0},
              "ddp_bucket": True, "calls_per_step": 2.0, "ms_per_step": 30.0,
              "exposed_ms_per_step": 20.0, "bytes_per_call": 4e6}  # fmt: skip
    session["collectives"] = {
        "total_ms_per_step": 30.0, "exposed_ms_per_step": 20.0, "by_site": [bucket],
        "ddp": [{"timed": True, "buckets_bytes": [4e6], "gradient_as_bucket_view": False}],
    }  # fmt: skip
    return session


def hot_line_session():
    """The slow session with a measured hot line (a solve per element, in the root's (self))."""
    session = unattributed_session()
    session["hot_lines"] = {"steps": 3, "lines": [{
        "file": "/x/train.py", "line": 34, "location": "train.py:34", "function": "penalty",
        "function_line": 31, "code": "t = t + z[i] @ torch.linalg.solve(c, z[i])", "owner": "",
        "owner_kind": "root", "forward_ms": {"median": 30.0, "mean": 30.0},
        "backward_ms": {"median": 10.0, "mean": 10.0}, "total_ms": {"median": 40.0, "mean": 40.0},
        "calls_per_step": 64.0, "torch_calls_per_step": 320.0,
        "top_ops": [{"op": "torch.linalg.solve", "forward_ms": 20.0, "backward_ms": 5.0,
                     "calls_per_step": 64.0}]}]}  # fmt: skip
    return session


def torch_sync_session():
    """The slow session with a sync torch's own code makes (a distribution's validation)."""
    session = slow_session()
    session["syncs"] = [*session["syncs"], {
        "kind": "bool", "op": "q = Normal(mu, std)", "file": "/x/train.py", "line": 40,
        "function": "step", "count": 6, "per_step": 2.0, "phase": "forward", "stall_ms": 0.3,
        "would_sync_on_cuda": True, "inside": "distributions/distribution.py:__init__"}]  # fmt: skip
    return session


def host_batch_session():
    """The slow session whose get_batch builds each batch on the host, one row at a time: two
    lines under the hot-line share, with Python outside torch sampled on one of them."""
    session = slow_session()
    lines = [{
        "file": "/x/train.py", "line": n, "location": f"train.py:{n}", "function": "get_batch",
        "function_line": 116, "code": "x = torch.stack([torch.from_numpy(d[i:i+T]) for i in ix])",
        "owner": "", "owner_kind": "root", "forward_ms": {"mean": 3.0},
        "backward_ms": {"mean": 0.0}, "total_ms": {"mean": 3.0}, "calls_per_step": 4.0,
        "torch_calls_per_step": 36.0, "top_ops": [{"op": "torch.from_numpy", "forward_ms": 2.0,
        "backward_ms": 0.0, "calls_per_step": 32.0}]} for n in (124, 125)]  # fmt: skip
    session["hot_lines"] = {"steps": 3, "lines": lines}
    session["python_lines"] = [{"file": "/x/train.py", "line": 124, "location": "train.py:124",
                                "ms_per_step": 4.0, "code": lines[0]["code"], "via": []}]  # fmt: skip
    return session


def dropout_session():
    """The slow session with a Dropout module holding 15% of the step."""
    session = slow_session()
    model = next(c for c in session["tree"]["children"] if c["kind"] == "module")
    drop = {"kind": "module", "path": f"{model['path']}.dropout", "name": "dropout",
            "type": "Dropout", "total_ms": {"median": 30.0, "mean": 30.0},
            "forward_ms": {"median": 20.0, "mean": 20.0}, "children": []}  # fmt: skip
    model.setdefault("children", []).append(drop)
    return session


def single_long_step_session():
    """A clean run whose step 40 of 60 evaluated: 200 model calls in eval mode, 400 ms more."""
    from reports_sessions import clean_session

    steps = [{"index": i, "wall_ms": 100.0, "detailed": False, "phases": {"other": 10.0},
              "model_calls": 1} for i in range(60)]  # fmt: skip
    steps[40].update(wall_ms=500.0, phases={"other": 410.0}, model_calls=201, eval_calls=200)
    return {**clean_session(), "steps": steps}


def padding_session(pad_to: int | None = 64, trainer: bool = False):
    """A clean run of token batches, lengths 8-64 in batches of 4, padded to ``pad_to`` (None:
    each batch to its longest); forward and backward 80 of the step's 100 ms."""
    from reports_sessions import clean_session

    steps = []
    for i in range(6):
        lengths = [8 + (i * 4 + r) * 7 % 57 for r in range(4)]
        width = pad_to or max(lengths)
        steps.append({"index": i, "wall_ms": 100.0, "detailed": True,
                      "phases": {"forward": 30.0, "backward": 50.0, "optimizer": 20.0},
                      "padding": {"positions": 4 * width, "real": sum(lengths),
                                  "per_batch": 4 * max(lengths), "lengths": lengths}})  # fmt: skip
    session = {**clean_session(), "steps": steps, "step_ms": {"median": 100.0, "mean": 100.0}}
    if trainer:
        session["environment"] = {**session.get("environment", {}),
                                  "optimizers": [{"type": "AdamW", "driver": "transformers"}]}
    return session


def unused_outputs_session():
    """The slow session whose model's last part computes outputs no gradient comes back from."""
    session = slow_session()
    model = next(c for c in session["tree"]["children"] if c["kind"] == "module")
    modules = [c for c in model.get("children") or () if c.get("kind") == "module"]
    tail = {"kind": "module", "path": f"{model['path']}.stage9", "name": "stage9",
            "type": "Linear", "calls_per_step": 1, "forward_ms": {"median": 12.0, "mean": 12.0},
            "total_ms": {"median": 12.0, "mean": 12.0}, "children": []}  # fmt: skip
    model["children"] = modules + [tail] + [c for c in model.get("children") or ()
                                            if c.get("kind") != "module"]  # fmt: skip
    session["unused_outputs"] = [{"path": tail["path"], "steps": 5, "of_steps": 5}]
    return session


def page_faults_session(faults: int = 267_000, kernel_ms: float = 420.0, device: str = "cpu"):
    """A clean CPU run whose steps spend ``kernel_ms`` of 800 in the kernel with ``faults``
    minor page faults each (build-nanogpt: 100 MB logits freshly mapped every step)."""
    from reports_sessions import clean_session

    steps = [{"index": i, "wall_ms": 800.0, "detailed": i < 2, "phases": {"forward": 300.0},
              "cpu_ms": 790.0, "cpu_wait_ms": 1.0, "sys_ms": kernel_ms,
              "user_ms": 790.0 - kernel_ms, "minor_faults": faults} for i in range(8)]  # fmt: skip
    session = {**clean_session(), "steps": steps, "step_ms": {"median": 800.0, "mean": 800.0},
               "label": "train_gpt2.py"}  # fmt: skip
    session["environment"] = {**session["environment"], "device": device}
    return session


def respawn_session(persistent: bool = False, starts=(7, 15, 23, 31), iterators: int = 5):
    """A clean run whose DataLoader (2 workers, not persistent) began a new epoch every 8 steps:
    each epoch's first step waited ~100 ms for its new workers (measured on a 64-feature
    TensorDataset with 8 batches per epoch: 100 ms restart against 1.7 ms)."""
    from reports_sessions import clean_session

    spikes = {s: 100.0 for s in starts}
    steps = [{"index": i, "wall_ms": 10.0 + spikes.get(i, 2.0), "detailed": i < 5,
              "phases": {"data": spikes.get(i, 2.0), "forward": 4.0}} for i in range(40)]  # fmt: skip
    session = {**clean_session(), "steps": steps, "step_ms": {"median": 12.0, "mean": 21.8},
               "label": "train.py"}  # fmt: skip
    loader = {"num_workers": 2, "persistent_workers": persistent, "pin_memory": False,
              "site": {"file": "/w/train.py", "function_line": 1, "line": 12},
              "iterators": iterators, "steps": 40, "starts": list(starts)}  # fmt: skip
    session["environment"] = {**session["environment"], "data_loaders": [loader]}
    session["config"] = {**session.get("config", {}), "steps": 40}
    return session


def after_steps_session(eval_calls: int = 0, grad_calls: int = 500):
    """A clean run whose final generate() after the loop (500 model calls) took 6 s of 58."""
    from reports_sessions import clean_session

    session = clean_session()
    run = {"total_ms": 57_800.0, "steps_ms": 45_000.0, "before_ms": 6_740.0, "after_ms": 6_060.0,
           "after_calls": {"model_calls": 500, "eval_calls": eval_calls,
                           "grad_calls": grad_calls}}  # fmt: skip
    session["config"] = {**session.get("config", {}), "run_time": run}
    dropout = {"kind": "module", "path": "drop", "name": "drop", "type": "Dropout",
               "children": []}  # (ng-video-lecture's model: training mode runs its dropout)
    session["tree"] = {**session["tree"], "children": [*session["tree"]["children"], dropout]}
    return session


def rnn_per_step_session(calls: float = 6.3, kind: str = "GRU"):
    """The seq2seq tutorial's encoder: its nn.GRU called once per input token (6.3 per step),
    6.6 ms of a 47 ms step."""
    from reports_sessions import clean_session, node

    session = clean_session()
    gru = node("encoder.gru", 2.2, 4.4, type=kind, calls=calls)
    encoder = node("encoder", 3.8, 7.9, type="EncoderRNN", children=[gru], calls=calls)
    root = node("", 13.8, 28.6, kind="root", children=[encoder])
    root["total_ms"] = {"median": 47.0, "mean": 47.0}
    return {**session, "step_ms": {"median": 47.0, "mean": 47.0}, "tree": root}


def embedding_gradient_session(optimizer: str = "SGD", head_params: int = 0):
    """The seq2seq tutorial's two embeddings, looked up one token per call: 8.9 and 5.1 ms of
    backward against 0.44 and 0.27 ms of forward, in a 50 ms step; with ``head_params``, a
    linear head of that many parameters beside them."""
    from reports_sessions import clean_session, node

    session = clean_session()
    enc_emb = {**node("Enc.emb", 0.44, 8.9, type="Embedding", calls=7.0), "params": 1103360}
    dec_emb = {**node("Dec.emb", 0.27, 5.1, type="Embedding", calls=6.0), "params": 723200}
    head = {**node("Dec.out", 1.6, 1.2, type="Linear", calls=6.0), "params": head_params}
    encoder = node("Enc", 3.0, 12.0, type="Enc", children=[enc_emb], calls=7.0)
    decoder = node("Dec", 6.0, 9.0, type="Dec", children=[dec_emb, head], calls=6.0)
    root = node("", 13.0, 35.0, kind="root", children=[encoder, decoder])
    root["total_ms"] = {"median": 50.0, "mean": 50.0}
    environment = {**session.get("environment", {}), "optimizers": [{"type": optimizer}]}
    return {**session, "step_ms": {"median": 50.0, "mean": 50.0}, "tree": root,
            "environment": environment}


def _lbfgs_session():
    """The slow session stepped by LBFGS whose own work is 60% of the detailed steps."""
    from reports_sessions import slow_session

    session = slow_session()
    session["phases"] = {"forward": {"median": 50.0}, "backward": {"median": 30.0},
                         "optimizer": {"median": 120.0}}  # fmt: skip
    session["environment"]["optimizers"] = [{"type": "LBFGS", "history_size": 100}]
    return session


def _contention_session():
    """The slow session on a busy machine: each step waited a third of its time for a core."""
    from reports_sessions import slow_session

    steps = [{"index": i, "wall_ms": 30.0, "cpu_ms": 20.0, "cpu_wait_ms": 10.0, "phases": {}}
             for i in range(9)]  # fmt: skip
    return {**slow_session(), "steps": steps}


#: crafted sessions of rules named by function (test_reports_advice.py's CRAFTED)
MORE_CRAFTED = {"cpu_contention": _contention_session, "lbfgs_bookkeeping": _lbfgs_session}
