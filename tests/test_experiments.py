"""The experiments' own logic: the logit lens (layer_analysis) and the context-swap gap (context_use)."""

import pytest
import torch

import cli
import corpus
import evaluation
import models


def test_logit_lens_of_the_last_layer_is_the_model_prediction(story_tokenizer, tiny_mlm):
    from experiments import layer_analysis

    ids = evaluation.evaluation_rows(story_tokenizer, corpus.generate_corpus(2, seed=1), 48, True)
    with torch.no_grad():
        out = tiny_mlm(input_ids=ids, output_hidden_states=True)
        assert torch.allclose(layer_analysis.lm_head(tiny_mlm)(out.hidden_states[-1]), out.logits, atol=1e-5)


def test_context_use_gap_is_zero_exactly_when_attention_carries_nothing(story_tokenizer):
    from experiments import context_use

    model = models.build_model("diffusion", "tiny", story_tokenizer, 48, 0.0).eval()
    rows = evaluation.evaluation_rows(story_tokenizer, corpus.generate_corpus(16, seed=1), 48, True)
    reading = context_use.context_gap(model, story_tokenizer, rows, 0.5, True, seed=0)
    assert reading["gap"] != 0 and reading["masked_tokens"] > 0
    for layer in model.roberta.encoder.layer:  # each position now sees only its own token and position
        torch.nn.init.zeros_(layer.attention.output.dense.weight)
        torch.nn.init.zeros_(layer.attention.output.dense.bias)
    blind = context_use.context_gap(model, story_tokenizer, rows, 0.5, True, seed=0)
    assert blind["gap"] == 0 and blind["masked_tokens"] == reading["masked_tokens"]
    with pytest.raises(cli.UsageError, match="fewer than two blocks"):
        context_use.context_gap(model, story_tokenizer, rows[:1], 0.5, True, seed=0)


def test_copy_probe_scores_the_last_mention_of_each_slot(tiny_checkpoint):
    from experiments import copy_probe

    checkpoint = models.load_checkpoint(tiny_checkpoint)
    rows = copy_probe.probe(checkpoint, 40, seed=0)
    assert [r["slot"] for r in rows] == ["A", "C", "O"]
    assert rows[0]["chance"] == 1 / len(corpus.NAMES) and rows[1]["chance"] == 1 / len(corpus.COLOURS)
    for row in rows:
        assert row["stories"] > 10 and 0 <= row["top1_right"] <= 1 and 0 <= row["top1_follows_swap"] <= 1
        assert -1 <= row["embedding_cosine"] <= 1
    story = "the day tom found a red ball in the park . then tom gave the red ball to anna ."
    ids = checkpoint.tokenizer(story)["input_ids"]
    where = copy_probe.mentions(checkpoint.tokenizer, ids, "tom")
    assert len(where) == 2
    swapped = copy_probe.swapped(checkpoint.tokenizer, ids, where[:1], "ben")
    assert checkpoint.tokenizer.decode(swapped, skip_special_tokens=True).split()[:3] == ["the", "day", "ben"]


def test_embedding_cosine_is_one_for_collapsed_words_and_low_for_distinct_ones(tiny_checkpoint):
    from experiments import copy_probe

    checkpoint = models.load_checkpoint(tiny_checkpoint)
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    table = model.get_input_embeddings().weight
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][-1] for w in corpus.COLOURS]
    with torch.no_grad():
        torch.manual_seed(0)
        table[ids] = torch.randn(len(ids), table.shape[1])  # eight unrelated vectors
        assert abs(copy_probe.embedding_cosine(model, tokenizer, corpus.COLOURS)) < 0.3
        table[ids] = table[ids[0]] + 1e-4 * torch.randn(len(ids), table.shape[1])  # one vector, barely perturbed
        assert copy_probe.embedding_cosine(model, tokenizer, corpus.COLOURS) > 0.99


def test_sampler_quality_reports_validity_and_variety_per_setting(tiny_checkpoint, tmp_path):
    from experiments import sampler_quality

    rows = sampler_quality.main(["--checkpoint", tiny_checkpoint, "--strategies", "threshold", "random", "--schedules", "cosine",
                                 "--steps", "3", "--num-samples", "4", "--max-length", "24", "--train-stories", "50",
                                 "--output-dir", str(tmp_path)])
    assert [(r["strategy"], r["steps"]) for r in rows] == [("threshold", 3), ("random", 3)]
    for row in rows:
        assert 0 <= row["valid"] <= row["well_formed"] <= 1 and 0 <= row["shape"] <= 1 and 0 <= row["opening"] <= 1
    assert (tmp_path / "sampler_quality.csv").read_text().splitlines()[0].split(",") == sampler_quality.COLUMNS
