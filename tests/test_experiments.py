"""The experiments' own logic: the logit lens (layer_analysis) and the context-swap gap (context_use)."""

import json
import shutil

import pytest
import torch

from textdiffusion import cli, models
from textdiffusion.data import corpus, tokenization
from textdiffusion.metrics import evaluation


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
    assert [r["slot"] for r in rows] == ["A", "C", "O", "B"]
    assert rows[0]["chance"] == 1 / len(corpus.NAMES) and rows[1]["chance"] == 1 / len(corpus.COLOURS)
    assert 10 < rows[3]["stories"] <= 40 and 0 <= rows[3]["first_person_share"] <= 1 and rows[3]["top1_follows_swap"] is None
    for row in rows[:3]:
        assert row["stories"] > 10 and 0 <= row["top1_right"] <= 1 and 0 <= row["top1_follows_swap"] <= 1
        assert -1 <= row["embedding_cosine"] <= 1
    story = "the day tom found a red ball in the park . then tom gave the red ball to anna ."
    ids = checkpoint.tokenizer(story)["input_ids"]
    where = copy_probe.mentions(checkpoint.tokenizer, ids, "tom")
    assert len(where) == 2
    swapped = copy_probe.swapped(checkpoint.tokenizer, ids, where[:1], "ben")
    assert checkpoint.tokenizer.decode(swapped, skip_special_tokens=True).split()[:3] == ["the", "day", "ben"]


def test_second_person_probe_is_chance_for_a_blind_model_and_one_for_a_model_that_repeats_the_first(tiny_checkpoint):
    from experiments import copy_probe

    checkpoint = models.load_checkpoint(tiny_checkpoint)
    tokenizer, vocab = checkpoint.tokenizer, len(checkpoint.tokenizer)
    name_ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][-1] for w in corpus.NAMES]
    stories = corpus.generate_corpus(30, seed=2)

    class Fake(torch.nn.Module):  # logits for every position: 0 everywhere, or +20 on the first name in the input
        def __init__(self, repeat_first):
            super().__init__()
            self.repeat_first, self.embedding = repeat_first, checkpoint.model.get_input_embeddings()

        def get_input_embeddings(self):
            return self.embedding

        def forward(self, input_ids):
            logits = torch.zeros(*input_ids.shape, vocab)
            if self.repeat_first:
                first = next(int(t) for t in input_ids[0] if int(t) in name_ids)
                logits[..., first] = 20.0
            return type("Output", (), {"logits": logits})

    blind = copy_probe.second_person(Fake(False), tokenizer, stories, 64)
    assert blind["stories"] == 30 and blind["first_person_share"] == pytest.approx(1 / len(corpus.NAMES))
    repeating = copy_probe.second_person(Fake(True), tokenizer, stories, 64)
    assert repeating["first_person_share"] > 0.99 and repeating["top1_right"] == 0


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


@pytest.mark.slow
def test_every_command_of_the_seed_readme_runs(tmp_path):
    """experiments/readme_commands.py: the original text-diffusion README's commands, in order, on two-step models."""
    from experiments import readme_commands

    rows = readme_commands.main(["--workdir", str(tmp_path), "--train-flags", "--max-steps 2"])
    assert [row["exit"] for row in rows] == [0] * len(rows) and len(rows) == 2 + len(readme_commands.COMMANDS)
    assert any("--max-length 50" in row["command"] for row in rows)
    # --max-length 50 on the quick-test model (48 positions, line by line): its documents end within 48 tokens
    run = json.loads((tmp_path / "results" / "visualization" / "run.json").read_text())
    assert run["settings"]["max_length"] == 48
    assert "--max-length 50: the model has 48 positions" in (tmp_path / "logs" / "04.log").read_text()
    for made in ("results/visualization/text_diffusion_animation.gif", "comparison.gif",
                 "results/experiments/layer_analysis/layer_analysis.png", "results/experiments/masking_viz/masking_viz.png"):
        assert (tmp_path / made).is_file(), made


def test_simple_corpus_pattern_reads_its_slots_from_training():
    from experiments.simple_corpus import Pattern

    pattern = Pattern(["The red mango is ripe.", "The blue brussels sprout is fried.", "no pattern here"])
    assert (pattern.colours, pattern.foods, pattern.adjectives) == (["blue", "red"], ["brussels sprout", "mango"], ["fried", "ripe"])
    assert pattern.follows("The blue mango is ripe.") and pattern.follows("The red brussels sprout is fried.", "red", "brussels sprout")
    assert not pattern.follows("The red mango is ripe.", colour="blue")  # a request for another colour
    assert not pattern.follows("The ripe mango is red.")  # words in the wrong slots
    assert not pattern.follows("The red mango is ripe")  # no full stop
    assert not pattern.follows("The red mango is ripe. The")


@pytest.mark.slow
def test_simple_corpus_recipe_runs_at_a_tiny_budget(tmp_path):
    from experiments import simple_corpus

    rows = simple_corpus.main(["--seeds", "0", "--max-steps", "4", "--num-samples", "4", "--num-requests", "2", "--threads", "1",
                               "--output-dir", str(tmp_path)])
    assert [row["model"] for row in rows] == ["diffusion", "autoregressive"]
    diffusion, ar = rows
    assert diffusion["bound_ratio"] == pytest.approx(diffusion["nats_per_token"] / ar["nats_per_token"])
    for row in rows:
        assert 0 <= row["novel_pattern"] <= min(row["pattern"], row["novel"]) <= 1 and row["control"] in (0, 0.5, 1)
    header = (tmp_path / "simple" / "simple_corpus.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["seed", "model", "bound_ratio"]


def test_schedule_comparison_checks_stories_only_for_a_model_of_the_built_in_corpus(tiny_checkpoint, tmp_path):
    from experiments import schedule_comparison

    other = tmp_path / "shakespeare-model"
    shutil.copytree(tiny_checkpoint, other)
    models.DiffusionConfig(line_by_line=True, max_length=32, corpus="input.txt").save(other)
    argv = ["--judge", "none", "--strategies", "random", "--schedules", "cosine", "--steps", "2", "--num-samples", "2"]
    builtin = schedule_comparison.main(["--checkpoint", tiny_checkpoint, *argv, "--output-dir", str(tmp_path / "a")])
    text = schedule_comparison.main(["--checkpoint", str(other), *argv, "--output-dir", str(tmp_path / "b")])
    assert 0 <= builtin[0]["valid_rate"] <= 1 and "valid_rate" not in text[0]
    assert text[0]["forward_passes"] == 2 and text[0]["entropy"] >= 0


def test_spread_quotes_min_median_max_in_any_order():
    from experiments.helpers import tables

    assert tables.spread([0.3, 0.1, 0.2, 0.4]) == "min 0.100, median 0.250, max 0.400"


def test_cfg_adherence_reports_every_sampler_with_its_passes(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path):
    from experiments import cfg_adherence

    argv = ["--checkpoint", tiny_checkpoint, "--judge", tiny_gpt2_checkpoint, "--num-prompts", "2", "--samples-per-prompt", "2",
            "--cfg-scales", "0", "1", "--strategy", "random", "--steps", "3", "--output-dir", str(tmp_path)]
    rows = cfg_adherence.main(argv)
    assert [r["sampler"] for r in rows] == ["held-out continuation", "diffusion, no guidance", "diffusion, CFG 1", "GPT-2 (the judge)"]
    # One pass per step; guidance runs each step twice (conditional and with the prompt masked).
    assert [r["passes"] for r in rows[:3]] == [0, 3, 6]
    for row in rows:
        assert 0 <= row["valid"] <= 1 and row["judge_ppl_given_prompt"] > 1 and row["adherence"] > 0
        assert row["adherence"] == pytest.approx(row["judge_ppl_alone"] / row["judge_ppl_given_prompt"])
    assert rows[0]["valid"] == 1.0  # the corpus's own stories
    assert (tmp_path / "cfg_adherence.csv").read_text().startswith("sampler,passes,judge_ppl_given_prompt")


def test_cfg_adherence_prompts_from_held_out_text_cut_windows_of_the_model_length(story_tokenizer, tmp_path):
    from experiments import cfg_adherence

    text = tmp_path / "held-out.txt"
    text.write_text(" ".join(corpus.generate_corpus(60, seed=3)))
    prompts = cfg_adherence.text_prompts(story_tokenizer, str(text), 4, 10, 32)
    assert len(prompts) == 4 and all(len(p.reference) == 31 - 10 for p in prompts)
    with pytest.raises(cli.UsageError, match="--prompt-tokens 40 leaves no room"):
        cfg_adherence.text_prompts(story_tokenizer, str(text), 4, 40, 32)


def test_cfg_adherence_refuses_a_judge_with_another_tokenizer_and_negative_scales(tiny_checkpoint, tmp_path):
    from experiments import cfg_adherence

    other = tmp_path / "other-gpt2"
    tokenizer = tokenization.train_tokenizer(corpus.generate_corpus(100, seed=5), "word", 300)
    models.build_model("ar", "tiny", tokenizer, 32).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(cli.UsageError, match="another tokenizer"):
        cfg_adherence.main(["--checkpoint", tiny_checkpoint, "--judge", str(other), "--output-dir", str(tmp_path / "o")])
    with pytest.raises(cli.UsageError, match="every scale must be >= 0"):
        cfg_adherence.main(["--checkpoint", tiny_checkpoint, "--judge", str(other), "--cfg-scales", "-1", "--output-dir", str(tmp_path / "o")])


def test_bench_training_times_both_collators_and_both_heads(tmp_path):
    from experiments import bench_training

    bench_training.main(["--batch-size", "4", "--max-length", "16", "--steps", "1", "--vocab-size", "200",
                         "--output-dir", str(tmp_path)])
    rows = (tmp_path / "bench_training.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["collator", "lm_head"]
    assert [row.split(",")[:2] for row in rows[1:]] == [
        ["naive (seed)", "every position"], ["vectorised", "every position"], ["vectorised", "masked positions"]]
    with pytest.raises(cli.UsageError, match="--vocab-size"):
        bench_training.main(["--vocab-size", "10", "--output-dir", str(tmp_path / "no")])
    with pytest.raises(cli.UsageError, match="no-such.txt"):
        bench_training.main(["--text-file", str(tmp_path / "no-such.txt"), "--output-dir", str(tmp_path / "no")])
    assert not (tmp_path / "no").exists()


def test_seed_spread_groups_cells_over_seed_tables_and_takes_ratios_per_row(tmp_path):
    from experiments import seed_spread

    def table(name, rows):
        path = tmp_path / name
        path.write_text("dataset,steps,bound,held\n" + "".join(f"{d},{s},{b},{h}\n" for d, s, b, h in rows))
        return str(path)

    files = [table("s0.csv", [("a", 1000, 2.0, 1.0), ("a", 5000, 1.2, 1.0)]),
             table("s1.csv", [("a", 1000, 3.0, 2.0), ("a", 5000, 1.1, 1.0)]),
             table("s2.csv", [("a", 1000, 9.0, 3.0)])]  # a seed that never measured the 5000-step cell
    out = tmp_path / "spread.csv"
    rows = seed_spread.main(["--files", *files, "--by", "dataset,steps", "--columns", "bound,bound/held", "--output", str(out)])
    assert [(row["steps"], row["n"]) for row in rows] == [("1000", 3), ("5000", 2)]
    assert (rows[0]["bound_min"], rows[0]["bound_median"], rows[0]["bound_max"]) == (2.0, 3.0, 9.0)
    assert (rows[0]["bound/held_min"], rows[0]["bound/held_median"], rows[0]["bound/held_max"]) == (1.5, 2.0, 3.0)
    assert (rows[1]["bound_min"], rows[1]["bound_median"], rows[1]["bound_max"]) == pytest.approx((1.1, 1.15, 1.2))
    assert out.read_text().splitlines()[0].startswith("dataset,steps,n,bound_min")
    with pytest.raises(cli.UsageError, match="has no column 'ratio'"):
        seed_spread.main(["--files", files[0], "--columns", "ratio", "--by", "dataset,steps"])
    with pytest.raises(cli.UsageError, match="no such file"):
        seed_spread.main(["--files", str(tmp_path / "missing.csv")])


def test_frontier_sweeps_temperatures_per_strategy_and_gpt2_with_mauve(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path, monkeypatch):
    from experiments import frontier

    held_out = tmp_path / "held-out.txt"
    held_out.write_text(" ".join(corpus.generate_corpus(80, seed=4)))
    argv = ["--checkpoints", tiny_checkpoint, tiny_checkpoint, "--ar-checkpoints", tiny_gpt2_checkpoint, tiny_gpt2_checkpoint,
            "--validation-file", str(held_out), "--strategies", "confidence", "random", "--temperatures", "0.8", "1.2",
            "--max-length", "32", "--num-samples", "6", "--steps", "8", "--output-dir", str(tmp_path / "out")]
    rows = frontier.main(argv)
    # Per pair: the held-out reference, then per temperature each strategy and GPT-2.
    per_pair = ["held-out text"] + ["diffusion confidence", "diffusion random", "GPT-2"] * 2
    assert [row["model"] for row in rows] == per_pair * 2 and [row["pair"] for row in rows] == [0] * 7 + [1] * 7
    assert [row["temperature"] for row in rows[:7]] == [None, 0.8, 0.8, 0.8, 1.2, 1.2, 1.2]
    for row in rows:
        assert row["gen_ppl"] > 1 and row["entropy"] > 0 and 0 < row["mauve"] <= 1
        assert row.get("passes") in (None, 8)
    assert rows[0]["mauve"] == 1.0
    table = (tmp_path / "out" / "frontier.md").read_text()
    assert "| diffusion random | 1.2 | 2 | 8 |" in table and (tmp_path / "out" / "frontier.png").stat().st_size > 0
    # A pair measured before with the same settings is read back, not sampled again.
    monkeypatch.setattr(frontier, "pair_rows", lambda *a: pytest.fail("sampled again"))
    assert frontier.main(argv) == rows


@pytest.mark.parametrize("flags, message", [
    (["--temperatures", "0"], "--temperatures 0.0 must be more than 0"),
    (["--strategies", "banana"], "--strategies banana is unknown"),
    (["--checkpoints", "one", "two"], "--checkpoints (2) and --ar-checkpoints (1) must be pairs"),
    (["--steps", "99", "--max-length", "32"], "--steps 99 must be in 1..--max-length 32"),
])
def test_frontier_bad_input_is_one_line(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path, capsys, flags, message):
    from experiments import frontier

    held_out = tmp_path / "held-out.txt"
    held_out.write_text("a held-out text .")
    argv = ["--checkpoints", tiny_checkpoint, "--ar-checkpoints", tiny_gpt2_checkpoint, "--validation-file", str(held_out),
            "--output-dir", str(tmp_path / "out"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(frontier.main, argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
