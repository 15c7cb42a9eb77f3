"""An encoder-decoder inference loop (Whisper's transcribe: the AudioEncoder once per segment,
then the TextDecoder on the segment's prompt and once per token): the steps, cut at the
decoder's calls, record the outermost modules each called, and the long steps are told as the
model's own work, not as an evaluation between steps."""

from collections import UserDict

import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.advice import advice_dicts
from torchdoctor.analyze.advice.step_inputs import MODEL_WORK_FIX


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256))

    def forward(self, audio):
        return self.body(audio)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 256)
        self.head = nn.Linear(256, 50)

    def forward(self, tokens, memory):
        return self.head(self.emb(tokens) + memory[:, :1].mean())


def _transcribe(segments=4, tokens=60):
    torch.manual_seed(0)
    encoder, decoder = Encoder().eval(), Decoder().eval()
    audio = torch.randn(1, 3000, 256)
    with (
        torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False) as prof,
        torch.no_grad(),
    ):
        for _ in range(segments):
            memory = encoder(audio)
            prompt = torch.zeros(1, 12, dtype=torch.long)
            next_token = decoder(prompt, memory)[:, -1:].argmax(-1)
            for _ in range(tokens):
                next_token = decoder(next_token, memory)[:, -1:].argmax(-1)
    return prof.session.to_dict()


def test_steps_that_run_the_encoder_or_a_prompt_are_told_as_the_models_own_work():
    session = _transcribe()
    assert session["config"]["step_boundary"] == "module"
    assert session["config"]["outer_modules"] == ["Decoder"]
    with_encoder = [s["index"] for s in session["steps"] if s.get("outer_modules")]
    assert with_encoder and all(
        session["steps"][i]["outer_modules"] == ["Decoder", "Encoder"] for i in with_encoder
    )
    prompts = [s["index"] for s in session["steps"] if s.get("input_shape") == [1, 12]]
    assert len(prompts) >= 3 and not set(prompts) & set(with_encoder)
    (periodic,) = [a for a in advice_dicts(session) if a["rule"] == "periodic-steps"]
    assert "Encoder's calls" in periodic["title"], periodic["title"]
    assert periodic["fix"] == MODEL_WORK_FIX
    assert periodic["estimated_saving_ms"] is None  # (not a loop's overhead to run less often)
    assert any("call Encoder, which a typical step does not" in e for e in periodic["evidence"])


def test_a_single_module_loop_records_no_outer_modules():
    torch.manual_seed(0)
    decoder = Decoder().eval()
    memory = torch.randn(1, 4, 256)
    with (
        torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False) as prof,
        torch.no_grad(),
    ):
        token = torch.zeros(1, 1, dtype=torch.long)
        for _ in range(30):
            token = decoder(token, memory)[:, -1:].argmax(-1)
    session = prof.session.to_dict()
    assert session["config"]["step_boundary"] == "module"
    assert "outer_modules" not in session["config"]
    assert not any("outer_modules" in s for s in session["steps"])


def test_after_the_first_steps_the_unusual_ones_are_still_recorded(monkeypatch):
    from torchdoctor.collect import profiler_state
    from torchdoctor.collect.profiler_state import ProfilerState

    monkeypatch.setattr(profiler_state, "INPUT_SHAPES", 20)
    state = ProfilerState()
    for i in range(200):  # an encoder step every 25 decoder steps, a 3-token prompt after it
        encoder = i % 25 == 0
        state.note_step_modules(i, {"Dec", "Enc"} if encoder else {"Dec"})
        state.note_input_shape(i, (1, 3) if encoder else (1, 1))
    late = [i for i in state.step_modules if i >= 20]
    assert late == [25, 50, 75, 100, 125, 150, 175]  # only the unusual ones, past the first 20
    assert [i for i in state.input_shapes if i >= 20] == late
    assert state.common_step_modules() == ["Dec"]
    entries = state.step_entries(
        [{"index": i, "wall_ms": 1.0, "phases": {}, "peak_memory_bytes": 0} for i in (150, 151)]
    )
    assert entries[0]["outer_modules"] == ["Dec", "Enc"] and entries[0]["input_shape"] == [1, 3]
    assert "outer_modules" not in entries[1]


class DictModel(nn.Module):
    """Called with one dict of tensors (sentence-transformers' ``model(features)``)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, features):
        return self.lin(features["input_ids"].float().unsqueeze(-1).expand(-1, -1, 8))


def test_a_batch_dict_passed_positionally_gives_the_step_its_input_shape():
    # SentenceTransformer.forward(features): no input shape was recorded, so one query per
    # call got no batching advice and longer batches no "longer inputs" explanation
    model = DictModel()
    with torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False) as prof:
        with torch.no_grad():
            for i in range(12):
                features = {"input_ids": torch.ones(1, 4 + i % 3, dtype=torch.long),
                            "attention_mask": torch.ones(1, 4 + i % 3)}  # fmt: skip
                model(features if i % 2 else UserDict(features))  # (a tokenizer's BatchEncoding)
    shapes = [step.get("input_shape") for step in prof.session["steps"]]
    assert len(shapes) >= 9 and all(shape[0] == 1 and shape[1] in (4, 5, 6) for shape in shapes)
