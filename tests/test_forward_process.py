"""The one forward process: training's collator and the likelihood bound mask the same positions for the same
generator, and the Trainer evaluates with its own collator."""

import pytest
import torch
from transformers import TrainingArguments

from textdiffusion.data import corpus, tokenization
from textdiffusion.errors import SettingsError
from textdiffusion.masking import ForwardProcess, mask_fraction
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.metrics import likelihood
from textdiffusion.training import DiffusionTrainer


@pytest.fixture(scope="module")
def rows(story_tokenizer):
    data = tokenization.tokenize_documents(story_tokenizer, corpus.generate_corpus(40, seed=3), 48, line_by_line=True)
    return torch.tensor(data["input_ids"])  # (40, 48)


def model_inputs_of(model, run) -> list[torch.Tensor]:
    """The input ids of every encoder pass `run()` makes."""
    seen = []
    hook = model.base_model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"]), with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return seen


def collated(collator, rows: torch.Tensor, batch_size: int) -> list[dict]:
    return [collator([{"input_ids": row} for row in rows[i : i + batch_size]]) for i in range(0, len(rows), batch_size)]


@pytest.mark.parametrize("block_size", [None, 8])
def test_the_antithetic_bound_masks_what_the_eval_collator_masks(story_tokenizer, tiny_mlm, rows, block_size):
    # A random visible prefix draws from the generator too, so the whole stream has to line up, batch after batch.
    layout = {"line_by_line": True, "prefix_length": 3, "prefix_policy": "random", "block_size": block_size}
    collator = DiffusionCollator(story_tokenizer, evaluation=True, seed=7, **layout)
    expected = [batch["input_ids"] for batch in collated(collator, rows, 16)]
    seen = model_inputs_of(tiny_mlm, lambda: likelihood.elbo_bound(
        tiny_mlm, story_tokenizer, rows, line_by_line=True, seed=7, batch_size=16, antithetic=True,
        prefix_length=3, prefix_policy="random", block_size=block_size,
    ))
    assert len(seen) == len(expected) == 3
    for bound_ids, collator_ids in zip(seen, expected):
        assert torch.equal(bound_ids, collator_ids)
    masked = torch.cat(expected)[:, :48] == story_tokenizer.mask_token_id
    assert 0.3 < masked.float().mean() < 0.7  # times spread evenly over (0, 1]: about half of the maskable tokens


@pytest.mark.parametrize("block_size", [None, 8])
def test_the_stratified_bound_masks_what_a_collator_at_those_times_masks(story_tokenizer, tiny_mlm, rows, block_size):
    few, copies = rows[:12], 4
    times = likelihood.stratified_times(len(few), copies, torch.Generator().manual_seed(5)).flatten()
    per_unit = times.repeat_interleave(48 // (block_size or 48))  # every block of a copy at that copy's time
    collator = DiffusionCollator(story_tokenizer, line_by_line=True, eval_times=per_unit, seed=5, block_size=block_size)
    (expected,) = collated(collator, few.repeat_interleave(copies, dim=0), 64)
    seen = model_inputs_of(tiny_mlm, lambda: likelihood.elbo_bound(
        tiny_mlm, story_tokenizer, few, line_by_line=True, num_t_samples=copies, seed=5, block_size=block_size,
    ))
    assert len(seen) == 1 and torch.equal(seen[0], expected["input_ids"])
    assert torch.equal(expected["mask_time"], per_unit)


def test_the_training_collator_masks_through_mask_units_with_its_generator(story_tokenizer, rows):
    # The collator's draws are, in order: the prefix lengths, the time offset, the scores of mask_units. Replaying
    # them on a generator in the same state gives the same masked positions.
    batch = DiffusionCollator(story_tokenizer, line_by_line=True, prefix_length=4, prefix_policy="random", seed=11)(
        [{"input_ids": row} for row in rows[:16]]
    )
    forward = ForwardProcess.for_tokenizer(story_tokenizer, line_by_line=True, prefix_length=4, prefix_policy="random")
    generator = torch.Generator().manual_seed(11)
    maskable = forward.maskable(rows[:16], generator)
    torch.rand(1, generator=generator)  # the antithetic offset the collator drew its times from
    units = forward.mask_units(rows[:16], maskable, batch["mask_time"], generator)
    assert torch.equal(units.input_ids, batch["input_ids"]) and torch.equal(units.labels, batch["labels"])
    assert torch.equal(units.rate, batch["mask_rate"]) and torch.equal(units.weight.float(), batch["loss_weight"])


@pytest.mark.parametrize("block_size", [None, 6])
def test_each_unit_masks_round_up_m_t_times_its_maskable_tokens_and_only_those(story_tokenizer, rows, block_size):
    forward = ForwardProcess.for_tokenizer(story_tokenizer, line_by_line=False, schedule="cosine", block_size=block_size)
    ids = rows[:8]
    maskable = forward.maskable(ids, None)
    units = forward.num_units(ids)
    times = torch.linspace(0.01, 1.0, units)
    out = forward.mask_units(ids, maskable, times, torch.Generator().manual_seed(0))
    n = maskable.view(units, -1).sum(-1)
    expected = torch.minimum(torch.ceil(mask_fraction("cosine", times) * n).long().clamp_min(1), n)
    assert torch.equal(out.masked.view(units, -1).sum(-1), expected)
    assert not (out.masked & ~maskable).any()
    assert torch.equal(out.input_ids[out.masked], torch.full((int(out.masked.sum()),), story_tokenizer.mask_token_id))
    assert torch.equal(out.labels != -100, out.masked) and torch.equal(out.input_ids[~out.masked], ids[~out.masked])
    again = forward.mask_units(ids, maskable, times, torch.Generator().manual_seed(0))
    other = forward.mask_units(ids, maskable, times, torch.Generator().manual_seed(1))
    assert torch.equal(again.masked, out.masked) and not torch.equal(other.masked, out.masked)


def test_block_units_are_read_noisy_then_clean(story_tokenizer, rows):
    forward = ForwardProcess.for_tokenizer(story_tokenizer, line_by_line=True, block_size=8)
    ids = rows[:2]
    out = forward.mask_units(ids, forward.maskable(ids, None), torch.full((12,), 0.5), None)
    model_ids, attention = out.model_inputs(torch.ones_like(ids, dtype=torch.bool))
    assert torch.equal(model_ids, torch.cat([out.input_ids, ids], 1)) and attention.shape == (2, 96)
    with pytest.raises(SettingsError, match="do not split into blocks of 5"):
        ForwardProcess.for_tokenizer(story_tokenizer, block_size=5).num_units(ids)


def test_a_wrong_number_of_times_or_an_unknown_schedule_is_refused(story_tokenizer, rows):
    forward = ForwardProcess.for_tokenizer(story_tokenizer)
    with pytest.raises(SettingsError, match="3 times for 4 masking units"):
        forward.mask_units(rows[:4], forward.maskable(rows[:4], None), torch.ones(3), None)
    with pytest.raises(SettingsError, match="schedule 'banana'"):
        ForwardProcess.for_tokenizer(story_tokenizer, schedule="banana")


def test_the_trainer_evaluates_with_its_own_collator_and_keeps_the_training_one(story_tokenizer, tiny_mlm, rows, tmp_path):
    dataset = [{"input_ids": row.tolist()} for row in rows[:24]]
    train_collator = DiffusionCollator(story_tokenizer, line_by_line=True, seed=1)
    eval_collator = DiffusionCollator(story_tokenizer, line_by_line=True, evaluation=True, seed=2)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_eval_batch_size=8,
                             remove_unused_columns=False, prediction_loss_only=True, disable_tqdm=True)
    trainer = DiffusionTrainer(model=tiny_mlm, args=args, train_dataset=dataset, eval_dataset=dataset,
                               data_collator=train_collator, eval_collator=eval_collator)
    first = trainer.evaluate()
    again = trainer.evaluate()
    assert trainer.data_collator is train_collator
    # A seeded stream restarted at each evaluation: the same batches, the same numbers.
    assert first["eval_loss"] == again["eval_loss"] and first["eval_elbo"] == again["eval_elbo"]
    eval_collator.reset()
    expected = collated(eval_collator, rows[:24], 8)
    eval_collator.reset()
    batches = list(trainer.get_eval_dataloader())
    assert len(batches) == 3 and all(torch.equal(b["input_ids"], e["input_ids"]) for b, e in zip(batches, expected))
    tiny_mlm.eval()
