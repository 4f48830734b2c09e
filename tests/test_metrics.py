"""metrics.py and evaluate.py: the ELBO bound, causal perplexity, sample metrics and bad input."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

import cli
import corpus
import documents
import evaluate
import evaluation
import likelihood
import models
import text_metrics
import tokenization
from data_collator import EVAL_TIMES

# ----------------------------------------------------------------------------- a toy model computed by hand

# ids: 0 <s>, 1 <pad>, 2 </s>, 3 <unk>, 4 <mask>, 5 "a", 6 "b"
A, B, MASK = 5, 6, 4


class ToyTokenizer:
    mask_token_id, pad_token_id, cls_token_id, sep_token_id = MASK, 1, 0, 2
    bos_token_id, eos_token_id = 0, 2
    all_special_ids = [0, 1, 2, 3, 4]

    def decode(self, ids):
        return " ".join({A: "a", B: "b"}[i] for i in ids)


class ToyModel(torch.nn.Module):
    """Predicts each masked position with p(right token) = 3/4 when the other position is visible, 1/2 when both
    are masked. The wrong token gets the rest; every other id has (practically) no probability."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        batch, seq = input_ids.shape
        logits = torch.full((batch, seq, 7), -1e4)
        both_masked = (input_ids[:, 1:] == MASK).all(-1)  # (batch,)
        right = torch.where(both_masked, 0.0, math.log(3.0))  # logit of the right token; the wrong one has 0
        for position, token in ((1, A), (2, B)):
            logits[:, position, A if token == B else B] = 0.0
            logits[:, position, token] = right
        return SimpleNamespace(logits=logits)


def test_elbo_bound_equals_the_hand_computed_value_on_a_two_token_toy_model():
    # Sequence <s> a b, packed layout: n = 2 maskable tokens. With two stratified times, t0 lies in (0, 1/2] and
    # t1 in (1/2, 1] for any seed. Linear schedule: t0 masks ceil(2 t0) = 1 token (weight n/k = 2), and the toy
    # model gives it p = 3/4; t1 masks both (weight 1), each with p = 1/2. Per token:
    #   (2 * -log(3/4) + 1 * (2 * log 2)) / (2 times * 2 tokens) = log(8/3) / 2
    expected = math.log(8 / 3) / 2
    for seed in (0, 1, 7):
        bound = likelihood.elbo_bound(ToyModel(), ToyTokenizer(), torch.tensor([[0, A, B]]), "linear", num_t_samples=2, seed=seed)
        assert bound.nats_per_token == pytest.approx(expected, rel=1e-6)
        assert bound.tokens == 2 and not bound.exact
    # The exact NLL of the toy model in the order a then b is log 2 - log(3/4) for 2 tokens: the bound is tight.
    assert expected == pytest.approx((math.log(2) - math.log(0.75)) / 2)


def test_stratified_times_put_one_time_in_each_stratum():
    times = likelihood.stratified_times(50, 4, torch.Generator().manual_seed(0))  # (rows, K)
    stratum = torch.ceil(times * 4) - 1
    assert torch.equal(stratum, torch.arange(4.0).expand(50, 4))
    assert torch.equal(times, likelihood.stratified_times(50, 4, torch.Generator().manual_seed(0)))


def test_bound_weight_is_n_over_k_for_the_linear_schedule():
    t = torch.tensor([0.01, 0.3, 1.0])
    rate = torch.tensor([1 / 47, 15 / 47, 1.0])  # k/n actually masked
    assert torch.allclose(likelihood.bound_weight("linear", t, rate), torch.tensor([47.0, 47 / 15, 1.0], dtype=torch.float64))


def test_bound_is_reproducible_with_the_same_seed_and_within_one_percent_across_seeds(story_tokenizer, tiny_mlm):
    rows = evaluation.evaluation_rows(story_tokenizer, corpus.generate_corpus(48, seed=1), 48, True)
    first = likelihood.elbo_bound(tiny_mlm, story_tokenizer, rows, "linear", True, num_t_samples=4, seed=3)
    again = likelihood.elbo_bound(tiny_mlm, story_tokenizer, rows, "linear", True, num_t_samples=4, seed=3)
    other = likelihood.elbo_bound(tiny_mlm, story_tokenizer, rows, "linear", True, num_t_samples=4, seed=4)
    assert first.nats_per_token == again.nats_per_token
    assert other.nats_per_token == pytest.approx(first.nats_per_token, rel=0.01)


# ----------------------------------------------------------------------------- the bound and training


@pytest.fixture(scope="module")
def short_training_run(tmp_path_factory):
    import train

    out = tmp_path_factory.mktemp("short-run")
    final = train.main([
        "--quick-test", "--output_dir", str(out), "--max_steps", "40", "--eval_steps", "10", "--save_steps", "1000",
        "--logging_steps", "10", "--max_train_samples", "2000", "--max_eval_samples", "64", "--max_length", "32",
        "--per_device_train_batch_size", "16", "--warmup_steps", "5", "--prefix_length", "0", "--disable_tqdm", "true",
    ])
    return out, final


def test_bound_decreases_as_training_proceeds(short_training_run):
    out, final = short_training_run
    model, tokenizer = models.load_masked_lm(str(out / "final-model"))
    rows = evaluation.evaluation_rows(tokenizer, corpus.generate_corpus(64, seed=documents.BUILTIN_EVAL_SEED), 32, True)
    untrained = models.build_model("diffusion", "tiny", tokenizer, 32)
    before = likelihood.elbo_bound(untrained, tokenizer, rows, "linear", True, num_t_samples=4)
    after = likelihood.elbo_bound(model, tokenizer, rows, "linear", True, num_t_samples=4)
    assert after.nats_per_token < 0.8 * before.nats_per_token


def test_train_eval_elbo_is_the_same_bound_as_metrics(short_training_run):
    # train.py evaluates at ten fixed times with a seeded collator; elbo_bound with those times, the same seed
    # (TrainingArguments' 42), batch size and layout must give the logged number.
    out, final = short_training_run
    model, tokenizer = models.load_masked_lm(str(out / "final-model"))
    rows = evaluation.evaluation_rows(tokenizer, corpus.generate_corpus(64, seed=documents.BUILTIN_EVAL_SEED), 32, True)
    bound = likelihood.elbo_bound(model, tokenizer, rows, "linear", True, seed=42, batch_size=64, fixed_times=EVAL_TIMES)
    assert bound.nats_per_token == pytest.approx(final["eval_elbo"], abs=2e-4)
    stratified = likelihood.elbo_bound(model, tokenizer, rows, "linear", True, num_t_samples=8, seed=0)
    assert stratified.nats_per_token == pytest.approx(final["eval_elbo"], rel=0.05)


# ----------------------------------------------------------------------------- causal LMs


def test_causal_perplexity_counts_every_token_after_the_first(story_tokenizer, tiny_gpt2_checkpoint):
    model, tokenizer = models.load_causal_lm(tiny_gpt2_checkpoint)
    rows = evaluation.evaluation_rows(tokenizer, corpus.generate_corpus(8, seed=1), 32, True)
    result = likelihood.causal_perplexity(model, tokenizer, rows)
    assert result.tokens == rows.numel() - len(rows) and result.exact
    # A random model is close to uniform over the vocabulary.
    assert abs(result.nats_per_token - math.log(len(tokenizer))) < 0.5
    assert result.bits_per_byte == pytest.approx(result.total_nats / math.log(2) / result.bytes)


def test_judge_with_another_tokenizer_retokenises_the_samples(tmp_path):
    char_tokenizer = tokenization.train_tokenizer(corpus.generate_corpus(50), "char", 100)
    judge = models.build_model("ar", "tiny", char_tokenizer, 64).eval()
    texts = ["tom found a red ball in the park .", "", "zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe"]
    result = likelihood.judge_perplexity(judge, char_tokenizer, texts)
    assert math.isfinite(result.ppl)
    assert result.tokens == sum(min(len(t) + 1, 63) for t in texts)  # characters plus the end token, each capped


def test_tokenizers_are_compared_by_their_ids(story_tokenizer):
    assert likelihood.same_tokenizer(story_tokenizer, story_tokenizer)
    assert not likelihood.same_tokenizer(story_tokenizer, tokenization.train_tokenizer(corpus.generate_corpus(50), "char", 100))


# ----------------------------------------------------------------------------- sample metrics by hand


def test_unigram_entropy_of_hand_made_samples():
    assert text_metrics.unigram_entropy("a a b b") == pytest.approx(math.log(2))
    assert text_metrics.unigram_entropy("a a a a") == 0.0
    assert text_metrics.unigram_entropy("") == 0.0
    assert text_metrics.mean_unigram_entropy(["a b c d", "a a"]) == pytest.approx(math.log(4) / 2)


def test_distinct_n_counts_unique_ngrams_over_all_samples():
    texts = ["a b a b", "a b"]
    assert text_metrics.distinct_n(texts, 1) == pytest.approx(2 / 6)
    assert text_metrics.distinct_n(texts, 2) == pytest.approx(2 / 4)  # (a b) (b a) (a b) | (a b)
    assert text_metrics.distinct_n(texts, 3) == pytest.approx(2 / 2)
    assert text_metrics.distinct_n(["a"], 2) == 0.0


def test_repetition_rate_counts_ngrams_repeated_within_a_sample():
    assert text_metrics.repetition_rate(["a b c a b c"]) == pytest.approx(1 / 4)  # abc bca cab abc
    assert text_metrics.repetition_rate(["a b c d", "a b c d"]) == 0.0  # repeats across samples do not count
    assert text_metrics.repetition_rate(["x x x x x x"]) == pytest.approx(3 / 4)


def test_story_metrics_tell_valid_copied_and_new_stories_apart():
    training = corpus.generate_corpus(100, seed=0)
    new = next(s for s in corpus.generate_corpus(200, seed=5) if s not in training)
    result = text_metrics.story_metrics([training[0], new, "tom found a red ball in the kitchen . zoe"], training)
    assert result == {"valid_rate": pytest.approx(2 / 3), "novel_valid_rate": pytest.approx(1 / 3)}


# ----------------------------------------------------------------------------- evaluate.py


def test_evaluate_reports_bound_exact_perplexity_and_sample_metrics(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path, capsys):
    table = evaluate.main([
        "--checkpoint", tiny_checkpoint, "--ar-checkpoint", tiny_gpt2_checkpoint, "--judge", tiny_gpt2_checkpoint,
        "--max-eval-samples", "16", "--num-t-samples", "2", "--num-samples", "4", "--steps", "4",
        "--output-dir", str(tmp_path / "eval"),
    ])
    rows = {row["model"]: row for row in table}
    assert set(rows) == {"diffusion", "autoregressive", "reference text"}
    assert rows["diffusion"]["same_tokens"] and not rows["diffusion"]["exact"] and rows["autoregressive"]["exact"]
    assert rows["diffusion"]["tokens"] == rows["autoregressive"]["tokens"] == 16 * 31  # same blocks, same tokens
    assert rows["diffusion"]["forward_passes"] == 4 and len(rows["diffusion"]["samples"]) == 4
    assert {"gen_ppl", "entropy", "distinct_2", "valid_rate"} <= set(rows["autoregressive"])
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [row["model"] for row in saved["rows"]] == ["diffusion", "autoregressive", "reference text"]
    assert "ppl (bound)" in capsys.readouterr().out


def test_evaluate_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--help"])
    assert exit_info.value.code == 0
    assert "--num-t-samples" in capsys.readouterr().out


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(evaluate.main, argv + ["--num-samples", "0", "--judge", "none"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # transformers may print a loading bar first
    assert err.startswith("error: ")
    return err


def test_evaluation_file_without_text_is_a_usage_error(tiny_checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert "contains no text" in _usage_error(["--checkpoint", tiny_checkpoint, "--validation-file", str(empty)], capsys)


def test_causal_lm_as_the_diffusion_checkpoint_is_a_usage_error(tiny_gpt2_checkpoint, capsys):
    assert "not a masked LM" in _usage_error(["--checkpoint", tiny_gpt2_checkpoint], capsys)


def test_masked_lm_as_the_ar_checkpoint_is_a_usage_error(tiny_checkpoint, capsys):
    assert "not an autoregressive" in _usage_error(["--checkpoint", tiny_checkpoint, "--ar-checkpoint", tiny_checkpoint], capsys)


def test_text_shorter_than_one_block_is_a_usage_error(tiny_checkpoint, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("tom found a ball .")
    argv = ["--checkpoint", tiny_checkpoint, "--validation-file", str(short), "--line-by-line", "false"]
    assert "fewer than one block" in _usage_error(argv, capsys)


# ----------------------------------------------------------------------------- experiments


def test_a_trainer_checkpoint_without_tokenizer_loads_with_its_runs_tokenizer_and_settings(tiny_checkpoint, tmp_path):
    import shutil

    shutil.copytree(tiny_checkpoint, tmp_path / "final-model")
    step = tmp_path / "checkpoint-5"
    step.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tmp_path / "final-model" / name, step / name)
    checkpoint = models.load_checkpoint(str(step))
    assert checkpoint.line_by_line and checkpoint.max_length == 32
    assert len(checkpoint.tokenizer) == checkpoint.model.get_input_embeddings().num_embeddings


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
