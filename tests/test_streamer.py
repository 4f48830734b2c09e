"""The sampler streams its steps in transformers' TextDiffusionStreamer protocol: the prompt via put, the state after
every step via put_draft, each finished block via put, then end(); transformers' own streamer works with it."""

import copy
import re
from contextlib import contextmanager

import pytest
import torch
from transformers import TextDiffusionStreamer, TextStreamer

import generate
from textdiffusion import blocks, models, sampling
from textdiffusion.data import tokenization

DRAFT = re.compile(r"\x1b7\x1b\[33m.*?\x1b\[0m", re.DOTALL)  # TextDiffusionStreamer's draft: saved cursor, yellow text
CLEAR = "\x1b8\x1b[J"  # ... and how it wipes one


class Recorder:
    """Every call a streamer gets, in order: ("put" | "draft", (batch, n) ids) and ("end", None)."""

    def __init__(self, start_draft: bool = False):
        self.calls = []
        if start_draft:
            self._takes_start_draft = True

    def put(self, value):
        self.calls.append(("put", value.clone()))

    def put_draft(self, value):
        self.calls.append(("draft", value.clone()))

    def end(self):
        self.calls.append(("end", None))

    def states(self) -> list[torch.Tensor]:
        """The whole (batch, seq) state at each draft: the tokens confirmed so far, then the draft."""
        final, states = [], []
        for kind, value in self.calls:
            if kind == "put":
                final.append(value)
            elif kind == "draft":
                states.append(torch.cat([*final, value], dim=-1))
        return states

    def confirmed(self) -> torch.Tensor:
        return torch.cat([value for kind, value in self.calls if kind == "put"], dim=-1)


@contextmanager
def counting_forwards(model):
    """A list that gets one item per forward pass of `model` inside the block (its embeddings run once a pass; the
    sampler calls the backbone and the LM head apart)."""
    calls = []
    hook = model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        hook.remove()


def settings(**kwargs) -> sampling.GenerationSettings:
    return sampling.GenerationSettings(**{"prefix": "tom found", "max_length": 16, "num_samples": 1, "steps": 4,
                                          "strategy": "confidence", "seed": 3, **kwargs})


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return models.load_checkpoint(tiny_checkpoint)


def sample_with(model, tokenizer, config: sampling.SamplerConfig, streamer=None, prefix="tom found", rows=3,
                infill=None, end=False, seed=0) -> sampling.SampleResult:
    ids = sampling.build_inputs(tokenizer, prefix, 16, rows, infill, end_token=infill is not None)
    return sampling.sample(model, ids, tokenizer.mask_token_id, config, sampling.banned_token_ids(tokenizer, allow_end=end),
                           torch.Generator().manual_seed(seed), streamer=streamer,
                           end_token_id=tokenization.end_token_id(tokenizer) if end else None)


@pytest.fixture(scope="module")
def block_model_that_ends(tiny_mlm, story_tokenizer):
    """A block-diffusion wrapper (blocks of 4) around a tiny MLM leaning hard to the end token: every row ends in
    an early block, so the sampler stops there and fills the rest with end tokens (one more step)."""
    leaning = copy.deepcopy(tiny_mlm)
    with torch.no_grad():
        leaning.get_output_embeddings().bias[tokenization.end_token_id(story_tokenizer)] += 30.0
    return blocks.BlockModel(leaning, 4)


SAMPLER_CASES = {
    "one-block": ({"strategy": "confidence", "steps": 4}, {}),
    "semi-ar-blocks": ({"strategy": "confidence", "steps": 6, "block_size": 4}, {}),
    "threshold-stops-early": ({"strategy": "threshold", "threshold": 0.01, "steps": 12}, {}),
    "remasking": ({"strategy": "remdm", "remask_eta": 0.5, "steps": 6}, {}),
    "infill": ({"strategy": "confidence", "steps": 3}, {"prefix": "", "infill": "tom found a [MASK]*3 in the [MASK]*2 ."}),
    "no-prompt": ({"strategy": "random", "steps": 3}, {"prefix": ""}),
}


@pytest.mark.parametrize("start_draft", [False, True], ids=["transformers-drafts", "with-start-draft"])
@pytest.mark.parametrize("case", SAMPLER_CASES)
def test_recording_streamer_sees_the_trajectory_step_by_step(tiny_mlm, story_tokenizer, case, start_draft):
    options, inputs = SAMPLER_CASES[case]
    recorder = Recorder(start_draft)
    result = sample_with(tiny_mlm, story_tokenizer, sampling.SamplerConfig(**options), recorder, **inputs)
    steps = result.trajectory if start_draft else result.trajectory[1:]
    assert len(recorder.states()) == len(steps)
    for state, step in zip(recorder.states(), steps):
        assert torch.equal(state, step.ids)
    # the prompt comes first, alone: the fixed tokens before the first generated position
    first_generated = int((~result.fixed).any(0).nonzero().min())
    assert recorder.calls[0][0] == "put" and torch.equal(recorder.calls[0][1], result.ids[:, :first_generated])
    assert torch.equal(recorder.confirmed(), result.ids)
    assert [kind for kind, _ in recorder.calls].count("end") == 1 and recorder.calls[-1][0] == "end"


def test_finished_blocks_are_confirmed_before_the_next_block_is_drafted(tiny_mlm, story_tokenizer):
    recorder = Recorder()
    config = sampling.SamplerConfig(strategy="confidence", steps=6, block_size=4)
    result = sample_with(tiny_mlm, story_tokenizer, config, recorder)
    kinds = "".join(kind[0] for kind, _ in recorder.calls)  # p(ut), d(raft), e(nd)
    # prompt (<s> tom found: 3 tokens), then 13 generated positions in blocks of 4, 4, 4, 1 with 2, 2, 1, 1 steps;
    # the last block is confirmed by end()
    assert kinds == "pddpddpdpdpe"
    assert [value.size(-1) for kind, value in recorder.calls if kind == "put"] == [3, 4, 4, 4, 1]
    assert torch.equal(recorder.confirmed(), result.ids)


def test_a_block_model_that_ends_early_streams_its_end_filling_step(block_model_that_ends, story_tokenizer):
    recorder = Recorder()
    config = sampling.SamplerConfig(strategy="confidence", steps=8, end_after_text=False)
    result = sample_with(block_model_that_ends, story_tokenizer, config, recorder, end=True)
    assert result.trajectory[-1].active is None  # the end-filling step happened
    assert len(recorder.states()) == len(result.trajectory) - 1
    for state, step in zip(recorder.states(), result.trajectory[1:]):
        assert torch.equal(state, step.ids)
    assert torch.equal(recorder.confirmed(), result.ids)


@pytest.mark.parametrize("case", ["semi-ar-blocks", "infill", "threshold-stops-early"])
def test_a_finished_result_streams_with_the_very_calls_sampling_makes(tiny_mlm, story_tokenizer, case):
    options, inputs = SAMPLER_CASES[case]
    live, replayed = Recorder(start_draft=True), Recorder(start_draft=True)
    result = sample_with(tiny_mlm, story_tokenizer, sampling.SamplerConfig(**options), live, **inputs)
    sampling.stream_result(replayed, result)
    assert [kind for kind, _ in replayed.calls] == [kind for kind, _ in live.calls]
    assert all(kind == "end" or torch.equal(a, b) for (kind, a), (_, b) in zip(live.calls, replayed.calls))


def test_streamer_none_samples_the_same_ids_with_the_same_forward_passes(tiny_mlm, story_tokenizer):
    config = sampling.SamplerConfig(strategy="remdm", remask_eta=0.5, steps=6, block_size=4)
    with counting_forwards(tiny_mlm) as plain_forwards:
        plain = sample_with(tiny_mlm, story_tokenizer, config, None, seed=5)
    with counting_forwards(tiny_mlm) as streamed_forwards:
        streamed = sample_with(tiny_mlm, story_tokenizer, config, Recorder(start_draft=True), seed=5)
    assert torch.equal(plain.ids, streamed.ids) and plain.nfe == streamed.nfe
    assert len(streamed_forwards) == len(plain_forwards) > 0
    assert all(torch.equal(a.ids, b.ids) for a, b in zip(plain.trajectory, streamed.trajectory, strict=True))


def test_generate_with_a_streamer_gives_the_same_texts_as_without(checkpoint):
    plain = sampling.generate(checkpoint, settings(num_samples=2), progress=False)
    recorder = Recorder()
    streamed = sampling.generate(checkpoint, settings(num_samples=2), progress=False, streamer=recorder)
    assert torch.equal(plain.ids, streamed.ids) and plain.texts == streamed.texts and plain.nfe == streamed.nfe
    assert torch.equal(recorder.confirmed(), streamed.ids)


@pytest.mark.parametrize("extra", [{}, {"block_size": 4, "steps": 6}, {"prefix": "", "infill": "tom found a [MASK]*3 in the park ."}],
                         ids=["one-block", "semi-ar-blocks", "infill"])
def test_transformers_text_diffusion_streamer_shows_each_step_and_ends_on_the_sampled_text(checkpoint, extra, capsys):
    streamer = TextDiffusionStreamer(checkpoint.tokenizer, skip_special_tokens=True)
    ends, real_end = [], streamer.end
    streamer.end = lambda: ends.append(1) or real_end()
    out = sampling.generate(checkpoint, settings(**extra), progress=False, streamer=streamer)
    shown = capsys.readouterr().out
    assert shown.count("\x1b7") == len(out.trajectory) - 1  # one draft per sampler step
    assert ends == [1]
    confirmed = DRAFT.sub("", shown).replace(CLEAR, "")
    assert confirmed == checkpoint.tokenizer.decode(out.ids[0], skip_special_tokens=True) + "\n"


def test_skip_prompt_leaves_the_prompt_out_as_in_transformers(checkpoint, capsys):
    streamer = TextStreamer(checkpoint.tokenizer, skip_prompt=True)  # no put_draft: confirmed tokens only
    out = sampling.generate(checkpoint, settings(), progress=False, streamer=streamer)
    prompt = int((~out.result.fixed[0]).nonzero().min())  # <s> tom found: the first generated position
    assert capsys.readouterr().out == checkpoint.tokenizer.decode(out.ids[0, prompt:]) + "\n"


def test_transformers_streamer_refuses_batch_over_one_before_any_forward_pass(checkpoint):
    streamer = TextDiffusionStreamer(checkpoint.tokenizer)
    with counting_forwards(checkpoint.model) as forwards, pytest.raises(ValueError, match="only supports batch size 1"):
        sampling.generate(checkpoint, settings(num_samples=2), progress=False, streamer=streamer)
    assert forwards == []


def test_rerank_streams_the_kept_candidates_steps(checkpoint, tiny_gpt2_checkpoint):
    recorder = Recorder(start_draft=True)
    out = sampling.generate(checkpoint, settings(num_samples=2, rerank=3, guide=tiny_gpt2_checkpoint), progress=False,
                            streamer=recorder)
    assert len(recorder.states()) == len(out.trajectory)
    assert all(torch.equal(state, step.ids) for state, step in zip(recorder.states(), out.trajectory))
    assert torch.equal(recorder.confirmed(), out.ids)


def expected_view(tokenizer, trajectory, stop_at_end: bool, row: int = 0) -> str:
    """The step-by-step view as generate.py printed it from the finished trajectory before it was a streamer."""
    last = len(trajectory) - 1
    lines = [f"[{k:>{len(str(last))}}/{last}] {sampling.render_state(tokenizer, step.ids[row], stop_at_end)}\n"
             for k, step in enumerate(trajectory)]
    return "".join(lines) + "\n"


@pytest.mark.parametrize("extra", [{}, {"block_size": 4, "steps": 12}, {"strategy": "threshold", "threshold": 0.01, "steps": 12},
                                   {"prefix": "", "infill": "tom found a [MASK]*3 in the park ."}],
                         ids=["one-block", "semi-ar-blocks", "threshold-stops-early", "infill"])
def test_step_printer_prints_the_trajectory_of_the_first_sample(checkpoint, extra, capsys):
    printer = generate.StepPrinter(checkpoint.tokenizer, stop_at_end=checkpoint.line_by_line)
    out = sampling.generate(checkpoint, settings(num_samples=2, **extra), progress=False, streamer=printer)
    shown = capsys.readouterr().out
    assert shown == expected_view(checkpoint.tokenizer, out.trajectory, checkpoint.line_by_line)
    assert shown.endswith(f"/{len(out.trajectory) - 1}] {out.texts[0]}\n\n")
