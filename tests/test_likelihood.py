"""likelihood.py: the ELBO bound (by hand on a toy model, against train.py's eval_elbo), causal and judge perplexity."""

import math
from types import SimpleNamespace

import pytest
import torch

from textdiffusion import masking, models
from textdiffusion.data import corpus, documents, tokenization
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.masking.forward import filler_positions
from textdiffusion.metrics import evaluation, likelihood

# ----------------------------------------------------------------------------- a toy model computed by hand

# ids: 0 <s>, 1 <pad>, 2 </s>, 3 <unk>, 4 <mask>, 5 "a", 6 "b"
A, B, MASK = 5, 6, 4


class ToyTokenizer:
    mask_token_id, pad_token_id, cls_token_id, sep_token_id = MASK, 1, 0, 2
    bos_token_id, eos_token_id = 0, 2
    all_special_ids = (0, 1, 2, 3, 4)

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
    assert torch.allclose(masking.bound_weight("linear", t, rate), torch.tensor([47.0, 47 / 15, 1.0], dtype=torch.float64))


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


@pytest.mark.slow
def test_bound_decreases_as_training_proceeds(short_training_run):
    out, _ = short_training_run
    model, tokenizer = models.load_masked_lm(str(out / "final-model"))
    rows = evaluation.evaluation_rows(tokenizer, corpus.generate_corpus(64, seed=documents.BUILTIN_EVAL_SEED), 32, True)
    untrained = models.build_model("diffusion", "tiny", tokenizer, 32)
    before = likelihood.elbo_bound(untrained, tokenizer, rows, "linear", True, num_t_samples=4)
    after = likelihood.elbo_bound(model, tokenizer, rows, "linear", True, num_t_samples=4)
    assert after.nats_per_token < 0.8 * before.nats_per_token


@pytest.mark.slow
def test_train_eval_elbo_is_the_same_bound_as_metrics(short_training_run):
    # train.py evaluates with one antithetic draw per row from a seeded collator; elbo_bound with that draw, the
    # same seed (TrainingArguments' 42), batch size and layout must give the logged number, per document token.
    out, final = short_training_run
    model, tokenizer = models.load_masked_lm(str(out / "final-model"))
    rows = evaluation.evaluation_rows(tokenizer, corpus.generate_corpus(64, seed=documents.BUILTIN_EVAL_SEED), 32, True)
    bound = likelihood.elbo_bound(model, tokenizer, rows, "linear", True, seed=42, batch_size=64, antithetic=True)
    assert bound.nats_per_token == pytest.approx(final["eval_elbo"], abs=2e-4)
    stratified = likelihood.elbo_bound(model, tokenizer, rows, "linear", True, num_t_samples=8, seed=0)
    assert stratified.nats_per_token == pytest.approx(final["eval_elbo"], abs=3 * stratified.nats_per_token_stderr + 0.02)


@pytest.mark.slow
def test_the_run_saves_how_it_was_trained_as_a_typed_diffusion_config(short_training_run):
    out, _ = short_training_run
    assert models.load_checkpoint(str(out / "final-model")).diffusion_config == models.DiffusionConfig(
        objective="diffusion", mask_rates="continuous", schedule="linear", loss_weighting="uniform", prefix_length=0,
        prefix_policy="fixed", line_by_line=True, max_length=32, corpus="builtin", block_size=None,
    )


# ----------------------------------------------------------------------------- the logged estimate is unbiased

C = 7


class ThreeTokenTokenizer(ToyTokenizer):
    def decode(self, ids):
        return " ".join({A: "a", B: "b", C: "c"}[i] for i in ids)


class ThreeTokenModel(torch.nn.Module):
    """Over `<s> a b c`: each masked position gets p(right token) = 0.9, 0.6 or 0.3 when 2, 1 or 0 of the three
    are visible; the bound per token is then the mean of -log p over the number masked, weighted by how much of
    (0, 1] masks that many (a third each for the linear schedule)."""

    P_RIGHT = {1: 0.9, 2: 0.6, 3: 0.3}  # by the number masked

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, labels=None):  # labels: the Trainer then calls compute_loss
        batch, seq = input_ids.shape
        logits = torch.full((batch, seq, 8), -1e4)
        masked = (input_ids[:, 1:] == MASK).sum(-1)
        right = torch.tensor([0.0] + [math.log(p / (1 - p)) for p in self.P_RIGHT.values()])[masked]
        for position, (token, wrong) in enumerate(((A, B), (B, C), (C, A)), start=1):
            logits[:, position, wrong] = 0.0
            logits[:, position, token] = right
        return SimpleNamespace(logits=logits)


def test_the_logged_bound_is_unbiased_over_seeds(tmp_path):
    # train.py's eval_elbo, as the DiffusionTrainer logs it, averaged over many seeds of its eval collator, equals
    # the bound's expectation computed by hand: a third of (0, 1] each masks 1, 2 or 3 of the 3 tokens.
    from transformers import TrainingArguments

    from textdiffusion.training.trainer import DiffusionTrainer

    expected = sum(-math.log(p) for p in ThreeTokenModel.P_RIGHT.values()) / 3
    midpoints = (0.3 * -math.log(0.9) + 0.4 * -math.log(0.6) + 0.3 * -math.log(0.3))  # ten fixed midpoint times
    tokenizer = ThreeTokenTokenizer()
    dataset = [{"input_ids": [0, A, B, C]}] * 60
    collator = DiffusionCollator(tokenizer, evaluation=True, seed=0)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_eval_batch_size=60,
                             remove_unused_columns=False, prediction_loss_only=True, disable_tqdm=True)
    trainer = DiffusionTrainer(model=ThreeTokenModel(), args=args, eval_dataset=dataset, data_collator=collator, eval_collator=collator)
    logged = []
    for seed in range(100):
        collator.seed = seed
        logged.append(trainer.evaluate()["eval_elbo"])
    mean = sum(logged) / len(logged)
    assert mean == pytest.approx(expected, abs=0.003)
    assert abs(midpoints - expected) > 0.009  # the old fixed times were off by more than this test allows
    # The bound's own estimate (many stratified times) agrees within its standard error.
    bound = likelihood.elbo_bound(ThreeTokenModel(), tokenizer, torch.tensor([[0, A, B, C]] * 8), num_t_samples=64, seed=1)
    assert bound.nats_per_token == pytest.approx(expected, abs=4 * bound.nats_per_token_stderr)
    assert 0 < bound.nats_per_token_stderr < 0.05


# ----------------------------------------------------------------------------- filler end tokens


def test_filler_end_tokens_enter_neither_perplexity(story_tokenizer, tiny_mlm, tiny_gpt2_checkpoint):
    # Line-by-line rows `<s> document </s> </s> ...`: both models count the document's tokens and its one end
    # token, never the end tokens that fill the row after it.
    docs = corpus.generate_corpus(12, seed=1)
    rows = evaluation.evaluation_rows(story_tokenizer, docs, 32, True)
    end = tokenization.end_token_id(story_tokenizer)
    first_end = (rows == end).long().argmax(-1)  # a row's own end token; <s> at 0, so it is its count of tokens
    assert filler_positions(rows, end).any()
    document_tokens = int(first_end.sum())
    bound = likelihood.elbo_bound(tiny_mlm, story_tokenizer, rows, "linear", True, num_t_samples=2)
    assert bound.tokens == document_tokens
    model, tokenizer = models.load_causal_lm(tiny_gpt2_checkpoint)
    exact = likelihood.causal_perplexity(model, tokenizer, rows, line_by_line=True)
    assert exact.tokens == document_tokens
    cut = [likelihood.causal_nll(model, row[: n + 1].unsqueeze(0))[0] for row, n in zip(rows, first_end.tolist())]
    assert exact.total_nats == pytest.approx(sum(cut), rel=1e-5)
    # Packed rows have no filler: every token after the first is scored.
    assert likelihood.causal_perplexity(model, tokenizer, rows).tokens == rows.numel() - len(rows)


def test_gpt2_trains_and_evaluates_without_filler_targets(story_tokenizer):
    from textdiffusion.training.build import CausalCollator

    rows = evaluation.evaluation_rows(story_tokenizer, corpus.generate_corpus(4, seed=2), 48, True)
    batch = CausalCollator(story_tokenizer, line_by_line=True)([{"input_ids": row.tolist()} for row in rows])
    filler = filler_positions(rows, tokenization.end_token_id(story_tokenizer))
    assert (batch["labels"][filler] == -100).all()
    assert torch.equal(batch["labels"][~filler], rows[~filler])  # the document and its own end token stay targets
    packed = CausalCollator(story_tokenizer, line_by_line=False)([{"input_ids": row.tolist()} for row in rows])
    assert torch.equal(packed["labels"], rows)


# ----------------------------------------------------------------------------- causal LMs


def test_causal_perplexity_counts_every_token_after_the_first(story_tokenizer, tiny_gpt2_checkpoint):
    model, tokenizer = models.load_causal_lm(tiny_gpt2_checkpoint)
    rows = evaluation.evaluation_rows(tokenizer, corpus.generate_corpus(8, seed=1), 32, True)
    result = likelihood.causal_perplexity(model, tokenizer, rows)
    assert result.tokens == rows.numel() - len(rows) and result.exact
    # A random model is close to uniform over the vocabulary.
    assert abs(result.nats_per_token - math.log(len(tokenizer))) < 0.5
    assert result.bits_per_byte == pytest.approx(result.total_nats / math.log(2) / result.bytes)


def test_continuation_nll_scores_only_the_continuation(tiny_gpt2_checkpoint):
    model, _ = models.load_causal_lm(tiny_gpt2_checkpoint)
    torch.manual_seed(0)
    rows = torch.randint(5, 400, (3, 12))
    # Whole rows minus their first 5 tokens' part is the continuation given those 5 (different lengths batched).
    whole = [likelihood.causal_nll(model, rows[i : i + 1])[0] for i in range(3)]
    heads = [likelihood.causal_nll(model, rows[i : i + 1, :5])[0] for i in range(3)]
    pairs = [(rows[0, :5].tolist(), rows[0, 5:].tolist()), (rows[1, :5].tolist(), rows[1, 5:].tolist())]
    total, count = likelihood.continuation_nll(model, pairs + [(rows[2, :5].tolist(), rows[2, 5:9].tolist())])
    tail = likelihood.causal_nll(model, rows[2:3, :9])[0] - heads[2]
    assert count == 7 + 7 + 4
    assert total == pytest.approx(whole[0] - heads[0] + whole[1] - heads[1] + tail, rel=1e-5)
    with pytest.raises(ValueError, match="at least one token"):
        likelihood.continuation_nll(model, [([], [5, 6])])


def test_judge_with_another_tokenizer_retokenises_the_samples(tmp_path):
    char_tokenizer = tokenization.train_tokenizer(corpus.generate_corpus(50), "char", 100)
    judge = models.build_model("ar", "tiny", char_tokenizer, 64).eval()
    texts = ["tom found a red ball in the park .", "", "zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe zoe"]
    result = likelihood.judge_perplexity(judge, char_tokenizer, texts)
    assert math.isfinite(result.ppl)
    assert result.tokens == sum(min(len(t) + 1, 63) for t in texts)  # characters plus the end token, each capped


def test_tokenizers_are_compared_by_their_ids(story_tokenizer):
    assert tokenization.same_tokenizer(story_tokenizer, story_tokenizer)
    assert not tokenization.same_tokenizer(story_tokenizer, tokenization.train_tokenizer(corpus.generate_corpus(50), "char", 100))


# ----------------------------------------------------------------------------- sample metrics by hand


