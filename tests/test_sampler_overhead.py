"""experiments/sampler_overhead.py: the passes it replays are the passes the sampler made, counted, on the same
shapes and over the same cache; its refusals."""

import pytest
import torch

from experiments import sampler_overhead
from textdiffusion import blocks, cli, sampling
from textdiffusion.models.heads import as_denoiser


class Keeping(sampler_overhead.Recorder):
    """A recorder that also keeps what each call returned."""

    def __init__(self, inner):
        super().__init__(inner)
        self.returned = []

    def logits_at(self, ids, where, attention_mask=None):
        self.returned.append(super().logits_at(ids, where, attention_mask))
        return self.returned[-1]


@pytest.mark.parametrize("kind, strategy", [("row", "threshold"), ("row", "random"), ("block", "confidence"), ("block", "adaptive")])
def test_the_replayed_passes_are_the_sampler_s_own_counted_and_identical(tiny_mlm, story_tokenizer, kind, strategy):
    denoiser = blocks.BlockModel(tiny_mlm, 8) if kind == "block" else as_denoiser(tiny_mlm)
    inputs = sampling.build_inputs(story_tokenizer, "", 33, 3)
    config = sampling.SamplerConfig(steps=8, strategy=strategy)
    recorder = Keeping(denoiser)
    banned = sampling.banned_token_ids(story_tokenizer, allow_end=True)
    result = sampling.sample(recorder, inputs, story_tokenizer.mask_token_id, config, banned, torch.Generator().manual_seed(0))
    assert len(recorder.calls) == result.nfe > 0
    if kind == "block":  # each call works on one block of 8, left to right over the cache
        assert len({int(where.any(0).nonzero().min()) // 8 for _, where, _ in recorder.calls}) == 5  # positions 1-32
    replayed = sampler_overhead.replay(denoiser, recorder.calls)
    assert len(replayed) == len(recorder.returned)
    assert all(torch.equal(a, b) for a, b in zip(replayed, recorder.returned))


def test_the_table_is_the_generation_over_its_passes(tmp_path, capsys):
    rows = sampler_overhead.main(["--length", "17", "--steps", "4", "--batch-sizes", "1", "2", "--block-sizes", "0", "8",
                                  "--strategies", "random", "threshold", "--repeats", "1", "--vocab-size", "300",
                                  "--device", "cpu", "--output-dir", str(tmp_path)])
    assert [(r["strategy"], r["blocks"], r["batch"]) for r in rows] == [
        (s, b, n) for s in ("random", "threshold") for b in ("row", 8) for n in (1, 2)]
    for row in rows:
        assert row["passes"] == row["nfe"] and row["ratio"] == pytest.approx(row["generation_s"] / row["passes_s"])  # one pair
        assert row["passes"] <= 4 if row["blocks"] == "row" else 2 <= row["passes"] <= 4  # 4 steps shared by 2 blocks
    assert (tmp_path / "sampler_overhead.csv").read_text().splitlines()[0].startswith("strategy,blocks,batch,steps,passes")


@pytest.mark.parametrize("flags, message", [
    (["--block-sizes", "5"], "--block-sizes 5 does not divide the 16 generated positions of --length 17"),
    (["--batch-sizes", "0"], "--batch-sizes 0: each must be at least 1"),
    (["--strategies", "fastest"], "--strategies 'fastest': choose from"),
    (["--repeats", "0"], "--repeats 0 must be at least 1"),
])
def test_flags_out_of_range_are_one_line_and_write_nothing(tmp_path, flags, message):
    with pytest.raises(cli.UsageError, match=message):
        sampler_overhead.main(["--length", "17", *flags, "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
