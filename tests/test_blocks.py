"""Block diffusion (BD3-LM): the attention mask, the loss on the noisy half, the cache, the end of generation, the bound."""

import json
from pathlib import Path

import pytest
import torch

import train
from textdiffusion import blocks, models, sampling
from textdiffusion.data.tokenization import end_token_id
from textdiffusion.errors import SettingsError
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.masking.loss import diffusion_loss, masked_diffusion_loss
from textdiffusion.metrics import likelihood
from textdiffusion.sampling.prompts import build_inputs
from textdiffusion.sampling.sampler import SamplerConfig, sample

# Rows of 8 tokens in blocks of 2 (L = 8, B = 2) would be too big to write out; L = 4, B = 2 is the hand-checked case:
# noisy x0 x1 | x2 x3, clean c0 c1 | c2 c3. 1 = may attend.
HAND_CHECKED = torch.tensor([
    # x0 x1 x2 x3 c0 c1 c2 c3
    [1, 1, 0, 0, 0, 0, 0, 0],  # x0: its own noisy block only
    [1, 1, 0, 0, 0, 0, 0, 0],  # x1
    [0, 0, 1, 1, 1, 1, 0, 0],  # x2: its own noisy block and the clean block before
    [0, 0, 1, 1, 1, 1, 0, 0],  # x3
    [0, 0, 0, 0, 1, 1, 0, 0],  # c0: clean, its own block
    [0, 0, 0, 0, 1, 1, 0, 0],  # c1
    [0, 0, 0, 0, 1, 1, 1, 1],  # c2: clean, its own block and the one before
    [0, 0, 0, 0, 1, 1, 1, 1],  # c3
], dtype=torch.bool)


def test_training_mask_matches_bd3_on_a_hand_checked_case():
    assert torch.equal(blocks.training_mask(4, 2), HAND_CHECKED)


def test_additive_mask_is_zero_where_allowed_and_the_minimum_elsewhere():
    mask = blocks.additive(HAND_CHECKED, torch.float32)
    assert torch.all(mask[HAND_CHECKED] == 0)
    assert torch.all(mask[~HAND_CHECKED] == torch.finfo(torch.float32).min)


def test_block_of_the_whole_row_is_a_plain_forward(story_tokenizer):
    for architecture in ("roberta", "modernbert"):
        torch.manual_seed(0)
        model = models.build_model("diffusion", "tiny", story_tokenizer, 16, architecture=architecture).eval()
        ids = torch.randint(5, len(story_tokenizer), (2, 16))
        with torch.no_grad():
            doubled = blocks.doubled_forward(model, torch.cat([ids, ids], 1), torch.ones(2, 32, dtype=torch.long), 16)
            torch.testing.assert_close(doubled, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def _collator(tokenizer, block_size, seed=0, **kwargs):
    return DiffusionCollator(tokenizer, line_by_line=True, seed=seed, block_size=block_size, **kwargs)


def _rows(tokenizer, count=6, length=16):
    torch.manual_seed(1)
    return [{"input_ids": torch.randint(5, len(tokenizer), (length,))} for _ in range(count)]


def test_each_block_draws_its_own_time_and_masks_that_share_of_itself(story_tokenizer):
    batch = _collator(story_tokenizer, 4)(_rows(story_tokenizer))
    assert batch["input_ids"].shape == (6, 32)  # noisy then clean
    assert torch.equal(batch["input_ids"][:, 16:], torch.stack([r["input_ids"] for r in _rows(story_tokenizer)]))
    assert batch["labels"].shape == (6, 16) and batch["mask_time"].shape == (24,)
    masked = (batch["input_ids"][:, :16] == story_tokenizer.mask_token_id).view(24, 4).sum(-1)
    # Linear schedule; 4 maskable tokens per block but 3 in each row's first (position 0 is the start's place).
    assert batch["num_maskable"].tolist() == [3, 4, 4, 4] * 6
    expected = torch.minimum(torch.ceil(batch["mask_time"] * batch["num_maskable"]).long().clamp_min(1), batch["num_maskable"])
    assert torch.equal(masked, expected)
    assert len(set(batch["mask_time"].tolist())) == 24  # antithetic over blocks and rows: all different
    assert torch.equal(batch["labels"] != -100, batch["input_ids"][:, :16] == story_tokenizer.mask_token_id)


def test_one_block_per_row_masks_exactly_as_the_plain_collator(story_tokenizer):
    plain = _collator(story_tokenizer, None)(_rows(story_tokenizer))
    whole = _collator(story_tokenizer, 16)(_rows(story_tokenizer))
    assert torch.equal(whole["input_ids"][:, :16], plain["input_ids"])
    for key in ("labels", "mask_time", "mask_rate", "loss_weight", "num_maskable"):
        assert torch.equal(whole[key], plain[key]), key


@pytest.mark.parametrize(("architecture", "block_size"), [
    *[(architecture, None) for architecture in models.ARCHITECTURES],
    *[(architecture, 4) for architecture in ("roberta", "roberta-prelayernorm", "modernbert")],  # block diffusion's
])
def test_the_head_only_at_masked_positions_gives_the_full_heads_loss_and_gradients(story_tokenizer, architecture, block_size):
    torch.manual_seed(0)
    model = models.build_model("diffusion", "tiny", story_tokenizer, 16, architecture=architecture)
    batch = _collator(story_tokenizer, block_size)(_rows(story_tokenizer))
    args = (model, batch["input_ids"], batch["attention_mask"], batch["labels"], block_size)
    banned = torch.tensor([story_tokenizer.mask_token_id, story_tokenizer.pad_token_id])
    results = []
    for sparse in (False, True):
        model.zero_grad()
        if sparse:
            logits, targets, unit = blocks.masked_logits(*args)
            loss, ce_sum, count = masked_diffusion_loss(logits, targets, unit, batch["loss_weight"], batch["num_maskable"], "elbo", banned)
        else:
            logits, labels = blocks.unit_logits(*args)
            loss, ce_sum, count = diffusion_loss(logits, labels, batch["loss_weight"], batch["num_maskable"], "elbo", banned)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((loss.detach(), ce_sum.detach(), count, grads))
    (dense_loss, dense_ce, dense_count, dense_grads), (loss, ce, count, grads) = results
    assert ce.shape == dense_ce.shape == (24 if block_size else 6,) and torch.equal(count, dense_count) and count.sum() > 0
    torch.testing.assert_close(loss, dense_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ce, dense_ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads, dense_grads, rtol=1e-4, atol=1e-6)


def test_a_model_whose_head_is_unknown_gets_its_masked_rows_from_the_full_logits(story_tokenizer, monkeypatch):
    torch.manual_seed(0)
    model = models.build_model("diffusion", "tiny", story_tokenizer, 16, architecture="roberta").eval()
    batch = _collator(story_tokenizer, None)(_rows(story_tokenizer))
    monkeypatch.setattr(blocks.training, "prediction_head", lambda model: None)
    with torch.no_grad():
        logits, targets, unit = blocks.masked_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"], None)
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    masked = batch["labels"] != -100
    assert torch.equal(logits, full[masked]) and torch.equal(targets, batch["labels"][masked])
    assert torch.equal(unit, masked.nonzero(as_tuple=True)[0]) and unit.max() < 6


def test_loss_is_taken_on_the_noisy_half_only(story_tokenizer):
    model = models.build_model("diffusion", "tiny", story_tokenizer, 16, architecture="roberta")
    batch = _collator(story_tokenizer, 4)(_rows(story_tokenizer))
    seen = {}

    def keep(module, args, output):
        output.retain_grad()
        seen["logits"] = output

    handle = model.lm_head.register_forward_hook(keep)
    logits, labels = blocks.unit_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"], 4)
    loss, _, _ = diffusion_loss(logits, labels, batch["loss_weight"], batch["num_maskable"])
    loss.backward()
    handle.remove()
    grad = seen["logits"].grad.abs().sum(-1)  # (batch, 2L)
    assert torch.all(grad[:, 16:] == 0)  # the clean half never enters the loss
    masked = batch["labels"] != -100
    assert torch.all(grad[:, :16][masked] > 0) and torch.all(grad[:, :16][~masked] == 0)


def test_sampling_a_block_sees_what_training_showed_it(story_tokenizer):
    """Block k of the noisy half in training (over the clean blocks before it) = block k sampled over the cache."""
    torch.manual_seed(0)
    model = models.build_model("diffusion", "tiny", story_tokenizer, 16, architecture="modernbert").eval()
    clean = torch.randint(5, len(story_tokenizer), (2, 16))
    noisy = clean.clone()
    noisy[:, 8:12] = story_tokenizer.mask_token_id  # block 2 of 4 masked
    with torch.no_grad():
        trained = blocks.doubled_forward(model, torch.cat([noisy, clean], 1), torch.ones(2, 32, dtype=torch.long), 4)
        where = torch.zeros(2, 16, dtype=torch.bool)
        where[:, 8:12] = True
        sampled = blocks.BlockModel(model, 4).logits_at(noisy, where)
    torch.testing.assert_close(sampled, trained[:, 8:12].reshape(-1, trained.size(-1)), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def block_checkpoint(tmp_path_factory):
    """A block-diffusion model trained for a few steps by train.py (blocks of 8 over 48 tokens)."""
    out = tmp_path_factory.mktemp("block-run")
    train.main(["--quick-test", "--block-size", "8", "--max-steps", "4", "--logging-steps", "2", "--eval-steps", "4",
                "--max-train-samples", "200", "--max-eval-samples", "32", "--output-dir", str(out)])
    return str(out / "final-model")


def test_train_writes_the_block_size_and_uses_roberta_by_default(block_checkpoint):
    config = json.loads(Path(block_checkpoint, "diffusion_config.json").read_text())
    assert config["block_size"] == 8
    assert models.load_checkpoint(block_checkpoint).model.config.model_type == "roberta"


def test_a_tiny_modernbert_trains_block_by_block(tmp_path):
    metrics = train.main(["--quick-test", "--block-size", "4", "--architecture", "modernbert", "--max-length", "16",
                          "--max-steps", "3", "--eval-steps", "3", "--max-train-samples", "64", "--max-eval-samples", "16",
                          "--output-dir", str(tmp_path)])
    assert 0 < metrics["eval_loss"] < 20 and metrics["eval_elbo"] > 0
    assert models.load_checkpoint(str(tmp_path / "final-model")).block_size == 4


@pytest.mark.parametrize("strategy", ["confidence", "random", "threshold", "remdm"])
def test_cached_and_uncached_sampling_give_identical_tokens(block_checkpoint, strategy):
    checkpoint = models.load_checkpoint(block_checkpoint)
    tokenizer = checkpoint.tokenizer
    ids = build_inputs(tokenizer, "the", 40, 3)
    config = SamplerConfig(steps=10, strategy=strategy)
    out, cost = {}, {}
    for cache in (True, False):
        model = blocks.BlockModel(checkpoint.model, 8, cache=cache)
        generator = torch.Generator().manual_seed(3)
        out[cache] = sample(model, ids, tokenizer.mask_token_id, config, [tokenizer.pad_token_id], generator).ids
        cost[cache] = model.tokens_run
    assert torch.equal(out[True], out[False])
    assert not (out[True] == tokenizer.mask_token_id).any()
    assert cost[True] < cost[False]  # the prefix is run once, not at every pass


def test_generate_py_samples_a_block_checkpoint_the_same_with_and_without_the_cache(block_checkpoint):
    checkpoint = models.load_checkpoint(block_checkpoint)
    texts = [sampling.generate(checkpoint, sampling.GenerationSettings(num_samples=2, seed=4, kv_cache=cache, prefix="the"),
                               progress=False).texts for cache in (True, False)]
    assert texts[0] == texts[1]


def test_blocks_are_aligned_as_in_training_and_the_prefix_is_kept(block_checkpoint):
    checkpoint = models.load_checkpoint(block_checkpoint)
    settings = sampling.GenerationSettings(num_samples=2, prefix="the day", seed=0, strategy="confidence", steps=12)
    result = sampling.generate(checkpoint, settings, progress=False).result
    prompt = result.fixed[0].sum()
    active = [step.active[0].nonzero().flatten().tolist() for step in result.trajectory[1:] if step.active is not None]
    assert active[0][0] == 0 and all(a[0] % 8 == 0 and len(a) <= 8 for a in active)
    assert torch.equal(result.ids[:, :prompt], result.trajectory[0].ids[:, :prompt])


def _ends_at_once(checkpoint):
    """The checkpoint's model, biased so that every position predicts the end token."""
    end = end_token_id(checkpoint.tokenizer)
    with torch.no_grad():
        checkpoint.model.lm_head.decoder.bias[end] += 100.0
    return end


def test_generation_stops_after_the_block_in_which_every_row_ended(block_checkpoint):
    checkpoint = models.load_checkpoint(block_checkpoint)
    end = _ends_at_once(checkpoint)
    model = blocks.BlockModel(checkpoint.model, 8)
    ids = torch.full((2, 48), checkpoint.tokenizer.mask_token_id)
    ids[:, 0] = checkpoint.tokenizer.bos_token_id
    config = SamplerConfig(steps=24, strategy="confidence")  # 4 steps per block of 8
    result = sample(model, ids, checkpoint.tokenizer.mask_token_id, config, banned_token_ids=[checkpoint.tokenizer.pad_token_id],
                    end_token_id=end)
    assert torch.all(result.ids[:, 1:] == end)
    assert result.nfe <= 4 and model.tokens_run <= 4 * 8  # the first block only; nothing after it was computed
    assert torch.all(result.trajectory[-1].revealed[:, 8:])  # the rest written as end tokens in one last step


def test_block_bound_equals_the_masked_diffusion_bound_when_the_block_is_the_whole_row(story_tokenizer):
    torch.manual_seed(0)
    model = models.build_model("diffusion", "tiny", story_tokenizer, 16, architecture="roberta").eval()
    rows = torch.randint(5, len(story_tokenizer), (5, 16))
    plain = likelihood.elbo_bound(model, story_tokenizer, rows, num_t_samples=4, seed=2, line_by_line=True)
    whole = likelihood.elbo_bound(model, story_tokenizer, rows, num_t_samples=4, seed=2, line_by_line=True, block_size=16)
    assert whole.nats_per_token == pytest.approx(plain.nats_per_token, rel=1e-5)
    assert whole.tokens == plain.tokens
    smaller = likelihood.elbo_bound(model, story_tokenizer, rows, num_t_samples=4, seed=2, line_by_line=True, block_size=4)
    assert smaller.tokens == plain.tokens and smaller.nats_per_token != pytest.approx(plain.nats_per_token, rel=1e-3)


@pytest.mark.parametrize("flags, message", [
    (["--block-size", "0"], "--block-size 0 must be between 1"),
    (["--block-size", "7"], "--block-size 7 must be between 1 and --max-length 48 and divide it"),
    (["--block-size", "96"], "--block-size 96 must be between 1"),
    (["--block-size", "8", "--objective", "ar"], "does not apply to --objective ar"),
    (["--block-size", "8", "--architecture", "deberta"], "deberta-v2 is not one of them"),
])
def test_bad_block_sizes_are_refused_in_one_line(tmp_path, flags, message):
    with pytest.raises(SettingsError, match=message):
        train.main(["--quick-test", "--max-steps", "1", "--max-train-samples", "32", "--output-dir", str(tmp_path), *flags])


def test_a_block_checkpoint_refuses_another_block_size_and_cfg(block_checkpoint):
    checkpoint = models.load_checkpoint(block_checkpoint)
    with pytest.raises(SettingsError, match="trained with blocks of 8"):
        sampling.generate(checkpoint, sampling.GenerationSettings(block_size=4), progress=False)
    with pytest.raises(SettingsError, match="classifier-free guidance"):
        sampling.generate(checkpoint, sampling.GenerationSettings(prefix="the", cfg_scale=1.0), progress=False)


def test_a_pretrained_masked_lm_is_fine_tuned_block_by_block(tiny_checkpoint, tmp_path):
    metrics = train.main(["--model-name-or-path", tiny_checkpoint, "--dataset-name", "builtin", "--line-by-line",
                          "--max-length", "32", "--block-size", "8", "--max-steps", "2", "--eval-steps", "2",
                          "--max-train-samples", "32", "--max-eval-samples", "16", "--output-dir", str(tmp_path)])
    assert metrics["eval_elbo"] > 0
    checkpoint = models.load_checkpoint(str(tmp_path / "final-model"))
    assert checkpoint.block_size == 8 and checkpoint.model.config.model_type == "roberta"
    with pytest.raises(SettingsError, match="max_length 40 is larger than"):
        train.main(["--model-name-or-path", tiny_checkpoint, "--dataset-name", "builtin", "--max-length", "40",
                    "--block-size", "8", "--output-dir", str(tmp_path / "too-long")])


def test_infilling_inside_blocks_keeps_the_template_and_fills_every_gap(block_checkpoint):
    checkpoint = models.load_checkpoint(block_checkpoint)
    template = "tom found a [MASK]*3 ball in the [MASK]*4 . [MASK]*6"
    settings = sampling.GenerationSettings(num_samples=2, infill=template, seed=1, strategy="confidence", steps=13)
    out = sampling.generate(checkpoint, settings, progress=False)
    start = out.result.trajectory[0].ids
    assert torch.equal(out.result.ids[out.result.fixed], start[out.result.fixed])
    assert not (out.result.ids == checkpoint.tokenizer.mask_token_id).any()
    assert all(text.startswith("tom found a") for text in out.texts)


def test_block_training_is_reproducible_and_seeds_differ(tmp_path):
    def losses(seed, name):
        train.main(["--quick-test", "--block-size", "8", "--max-steps", "6", "--logging-steps", "2", "--eval-steps", "6",
                    "--max-train-samples", "96", "--max-eval-samples", "16", "--seed", str(seed), "--output-dir", str(tmp_path / name)])
        state = json.loads((tmp_path / name / "trainer_state.json").read_text())
        return [entry["loss"] for entry in state["log_history"] if "loss" in entry]

    first, again, other = losses(3, "a"), losses(3, "b"), losses(4, "c")
    assert len(first) == 3 and first == again
    assert first != other
