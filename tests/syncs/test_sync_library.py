"""A sync inside an installed package keeps where it happens and names the user's line."""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap

import pytest
import torch

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.library_syncs import KNOWN_LIBRARY_SYNCS, known_sync
from torchdoctor.collect.syncs import SyncAudit

LIBRARY = """
import torch


class Trainer:
    def __init__(self, weight, logging_nan_inf_filter=True):
        self.weight = weight
        self.logging_nan_inf_filter = logging_nan_inf_filter

    def train(self, steps):
        for _ in range(steps):
            loss = (self.weight * 2).sum()
            if (
                self.logging_nan_inf_filter
                and (torch.isnan(loss) or torch.isinf(loss))
            ):
                continue
"""


@pytest.fixture
def fakelib(tmp_path, monkeypatch):
    """A package installed in a site-packages folder (as pip would put it)."""
    site = tmp_path / "lib" / "site-packages"
    (site / "fakelib").mkdir(parents=True)
    (site / "fakelib" / "__init__.py").write_text(textwrap.dedent(LIBRARY))
    monkeypatch.syspath_prepend(str(site))
    module = importlib.import_module("fakelib")
    yield module
    sys.modules.pop("fakelib", None)


def _line_of(func, marker: str) -> int:
    lines, start = inspect.getsourcelines(func)
    (hit,) = [start + i for i, text in enumerate(lines) if marker in text]
    return hit


def test_library_sync_keeps_its_place_and_names_the_users_line(fakelib):
    trainer = fakelib.Trainer(torch.nn.Parameter(torch.ones(3)))

    def run():
        trainer.train(steps=2)  # the user's line

    with SyncAudit(predict=True) as audit:
        run()
    (record,) = audit.records()
    assert record["file"] == fakelib.__file__  # where it happens: inside the package
    assert record["kind"] == "bool" and record["count"] == 4  # isnan, isinf: 2 per step
    # the statement from its first line (Python 3.11 reports the `if (` line, 3.12 the line
    # of the sub-expression that converts the tensor: both show the same statement)
    assert record["op"].startswith("if (self.logging_nan_inf_filter")
    assert "torch.isnan(loss)" in record["op"]
    assert record["library"] == "fakelib"
    assert record["user_file"] == __file__
    assert record["user_line"] == _line_of(run, "# the user's line")
    assert record["user_op"] == "trainer.train(steps=2)  # the user's line"


def test_a_sync_in_the_users_own_file_names_no_library():
    weight = torch.nn.Parameter(torch.ones(2))
    with SyncAudit(predict=True) as audit:
        weight.sum().item()
    (record,) = audit.records()
    assert "library" not in record and "user_file" not in record


def _hf_record(**extra):
    record = {
        "kind": "bool",
        "op": "if (self.args.logging_nan_inf_filter and not is_torch_xla_available() and",
        "file": "/venv/lib/python3.11/site-packages/transformers/trainer.py",
        "line": 1919,
        "function": "_inner_training_loop",
        "count": 40,
        "per_step": 4.0,
        "phase": "other",
        "stall_ms": None,
        "library": "transformers",
        "user_file": "/home/me/train_hf.py",
        "user_line": 25,
        "user_op": "trainer.train()",
    }
    record.update(extra)
    return record


def test_known_library_syncs_are_matched_by_package_file_and_text():
    assert known_sync(_hf_record()).switch == "TrainingArguments(logging_nan_inf_filter=False)"
    assert known_sync(_hf_record(op="if x:")) is None
    assert known_sync(_hf_record(library="other")) is None
    lightning = {
        "library": "lightning_fabric",
        "file": "/v/site-packages/lightning_fabric/utilities/apply_func.py",
        "function": "to_item",
        "op": "return value.item()",
    }
    assert "prog_bar=False" in known_sync(lightning).switch
    masks = _hf_record(
        file="/v/site-packages/transformers/masking_utils.py",
        op="if not is_tracing(packed_sequence_mask) and (packed_sequence_mask[:, -1] == 0...",
        function="find_packed_sequence_indices",
    )
    assert known_sync(masks).switch is None  # inherent: said so, not a made-up switch
    assert len({(k.file, k.text) for k in KNOWN_LIBRARY_SYNCS}) == len(KNOWN_LIBRARY_SYNCS)


def test_pygs_scatter_sizing_read_is_known_with_the_poolings_size_switch():
    """PyG's global_add_pool(x, batch) without size= reads batch.max() at every call (its
    mutag_gin example: "no known switch")."""
    pool = {"library": "torch_geometric", "line": 48, "function": "scatter", "kind": "int",
            "file": "/v/site-packages/torch_geometric/utils/_scatter.py", "per_step": 2.0,
            "op": "dim_size = int(index.max()) + 1 if index.numel() > 0 else 0"}  # fmt: skip
    (item,) = advise({"step_ms": {"median": 100.0}, "syncs": [pool]})
    assert "size=data.num_graphs" in item.fix and "no known switch" not in item.fix
    assert "global_add_pool" in item.title
    other = {**pool, "op": "out = src.new_zeros(size).scatter_add_(dim, index, src)"}
    assert known_sync(other) is None  # (near miss: another line of the same file)


def test_a_known_sync_without_switch_says_so():
    masks = _hf_record(
        file="/v/site-packages/transformers/masking_utils.py",
        line=292,
        op="if (q_length == 1 or kv_length == q_length) and (padding_mask is None or fast...",
        function="_ignore_causal_mask_sdpa",
        per_step=2.0,
    )
    (item,) = advise({"step_ms": {"median": 100.0}, "syncs": [masks]})
    assert item.title.endswith("(known, no switch)") and item.confidence == "low"
    assert "mask checks" in item.fix and "no switch" in item.fix


def test_generates_per_token_stop_test_is_known_and_inherent():
    # seen on GPT2LMHeadModel.generate (transformers 5: StopCheck.__call__)
    stop = _hf_record(
        file="/v/site-packages/transformers/generation/utils.py",
        line=396,
        op="return bool(unfinished_sequences.max() == 0)",
        function="__call__",
        kind="bool",
        per_step=1.0,
    )
    known = known_sync(stop)
    assert known is not None and known.switch is None and "per generated token" in known.what
    (item,) = advise({"step_ms": {"median": 100.0}, "syncs": [stop]})
    assert item.title.endswith("(known, no switch)")
    # its own fix (a batch of prompts per call), not the mask checks' (a generate() loop on
    # GPT2LMHeadModel was told "the model's own mask checks have no switch")
    assert "more prompts" in item.fix and "mask" not in item.fix


def test_an_encoders_all_ones_mask_test_is_known_with_its_switch():
    # seen on BertForSequenceClassification under the Trainer (transformers 5)
    mask = _hf_record(
        file="/v/site-packages/transformers/masking_utils.py",
        line=354,
        op="and (padding_mask is None or padding_mask.all())",
        function="_ignore_bidirectional_mask_sdpa",
        kind="bool",
        per_step=1.0,
    )
    (item,) = advise({"step_ms": {"median": 100.0}, "syncs": [mask]})
    assert "no attention_mask" in item.fix and "no switch" not in item.title


def test_library_sync_advice_names_the_switch_and_the_users_line_not_lazymetrics():
    session = {
        "step_ms": {"median": 100.0},
        "environment": {"device": "cpu"},
        "syncs": [
            _hf_record(),
            _hf_record(line=2257, op="tr_loss.item()", kind="item", per_step=0.07),
        ],
    }
    (item,) = advise(session)
    assert item.rule == "library-syncs"
    assert "logging_nan_inf_filter=False" in item.title and "train_hf.py:25" in item.title
    assert "LazyMetrics" not in item.fix
    assert item.fix.startswith("TrainingArguments(logging_nan_inf_filter=False)")
    assert any("trainer.py:1919" in e for e in item.evidence)
    # a prediction for a GPU on this CPU run (as host-syncs' own lines): low; on CUDA, medium
    assert item.confidence == "low"
    session["environment"]["device"] = "cuda:0"
    assert advise(session)[0].confidence == "medium"


def test_a_packages_line_running_into_torchs_own_check_names_torchs_switch():
    """stable-baselines3 builds a Categorical per policy call: the read is torch.distributions'
    argument validation. When torch-syncs leaves it (negligible on this CPU step), the package
    advice names torch's switch instead of 'no known switch'; when torch-syncs reports it, the
    package advice leaves those records to it (one advice per cause)."""
    from torchdoctor.analyze.advice.library_syncs import library_syncs

    site = "/v/site-packages/stable_baselines3/common/distributions.py"
    records = [
        {"kind": "bool", "file": site, "line": 292, "per_step": 1.0, "library": "stable_baselines3",
         "op": "self.distribution = Categorical(logits=action_logits)", "user_file": "/w/ppo.py",
         "user_line": 8, "inside": "distributions/distribution.py:__init__", "phase": "forward"},
        {"kind": "item", "file": "/v/site-packages/stable_baselines3/ppo/ppo.py", "line": 230,
         "per_step": 1.0, "library": "stable_baselines3", "op": "pg_losses.append(loss.item())",
         "user_file": "/w/ppo.py", "user_line": 8, "phase": "other"},
    ]  # fmt: skip
    session = {"syncs": records, "step_ms": {"mean": 150.0, "median": 150.0},
               "tree": {"total_ms": {"mean": 150.0}}}  # (1 sync: negligible; 2: not)
    (item,) = library_syncs(session)
    assert item.title.endswith(": torch.distributions checks its arguments and samples on the host")
    assert "set_default_validate_args(False)" in item.fix
    assert "argument validation is on by default" in item.evidence[1]
    assert "for the 1 line(s) without a known switch" in item.fix  # (ppo.py:230's .item())
    records[0]["per_step"] = records[1]["per_step"] = 40.0  # now torch-syncs' own advice
    session["step_ms"] = {"mean": 2.0, "median": 2.0}
    session["tree"] = {"total_ms": {"mean": 2.0}}
    items = library_syncs(session)
    assert items and all("validate_args" not in a.fix for a in items)
