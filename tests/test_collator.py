import math
from types import SimpleNamespace

import pytest
import torch

from textdiffusion.data import corpus, tokenization
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.masking.schedules import SCHEDULES, elbo_weight, mask_fraction
from textdiffusion.training import TrainingStep


@pytest.fixture(scope="module")
def packed_rows(story_tokenizer):
    return tokenization.tokenize_documents(story_tokenizer, corpus.generate_corpus(200), 32, line_by_line=False)


@pytest.fixture(scope="module")
def line_rows(story_tokenizer):
    return tokenization.tokenize_documents(story_tokenizer, corpus.generate_corpus(64), 48, line_by_line=True)


def batch_of(rows, n):
    return [rows[i] for i in range(n)]


def test_labels_are_ignored_exactly_where_input_is_visible(story_tokenizer, packed_rows):
    batch = DiffusionCollator(story_tokenizer, seed=0)(batch_of(packed_rows, 16))
    masked = batch["input_ids"] == story_tokenizer.mask_token_id
    assert torch.equal(batch["labels"] != -100, masked)
    original = torch.tensor(batch_of(packed_rows, 16)[0]["input_ids"])
    assert torch.equal(batch["labels"][0][masked[0]], original[masked[0]])
    assert torch.equal(batch["input_ids"][0][~masked[0]], original[~masked[0]])


def test_prefix_tokens_are_never_masked(story_tokenizer, packed_rows):
    collator = DiffusionCollator(story_tokenizer, prefix_length=7, mask_rates="discrete", seed=1)
    for _ in range(20):
        batch = collator(batch_of(packed_rows, 8))
        assert (batch["labels"][:, :8] == -100).all()  # <s> + 7 prefix tokens


def test_random_prefix_lengths_vary_and_stay_below_the_maximum(story_tokenizer, packed_rows):
    collator = DiffusionCollator(story_tokenizer, prefix_length=10, prefix_policy="random", seed=2)
    lengths = collator.forward.prefix_lengths(4000, collator.generator)
    assert lengths.min() == 0 and lengths.max() == 10
    batch = collator(batch_of(packed_rows, 32))
    first_masked = (batch["labels"] != -100).float().argmax(-1)
    assert (first_masked >= 1).all() and len(set(first_masked.tolist())) > 3


def test_special_tokens_are_never_masked_in_packed_mode(story_tokenizer, packed_rows):
    collator = DiffusionCollator(story_tokenizer, mask_rates="discrete", seed=3)
    specials = torch.tensor([story_tokenizer.bos_token_id, story_tokenizer.eos_token_id, story_tokenizer.pad_token_id])
    for _ in range(20):
        batch = collator(batch_of(packed_rows, 8))
        targets = batch["labels"][batch["labels"] != -100]
        assert not torch.isin(targets, specials).any()


def test_end_tokens_are_targets_in_line_by_line_mode(story_tokenizer, line_rows):
    collator = DiffusionCollator(story_tokenizer, line_by_line=True, seed=4)
    batch = collator(batch_of(line_rows, 32))
    targets = batch["labels"][batch["labels"] != -100]
    assert (targets == story_tokenizer.eos_token_id).any()
    assert not (targets == story_tokenizer.bos_token_id).any()
    assert (batch["attention_mask"] == 1).all()  # the end-token fill is text, not padding


def test_padding_is_never_masked_and_not_attended(story_tokenizer):
    rows = [{"input_ids": [0, 10, 11, 12, 13, 2]}, {"input_ids": [0, 10, 11]}]
    batch = DiffusionCollator(story_tokenizer, seed=5)(rows)
    assert batch["input_ids"].shape == (2, 6)
    assert torch.equal(batch["attention_mask"][1], torch.tensor([1, 1, 1, 0, 0, 0]))
    assert (batch["labels"][1, 3:] == -100).all()


def test_empirical_mask_rate_matches_the_schedule(story_tokenizer, packed_rows):
    for schedule in SCHEDULES:
        collator = DiffusionCollator(story_tokenizer, schedule=schedule, seed=6)
        batch = collator(batch_of(packed_rows, 64))
        expected = mask_fraction(schedule, batch["mask_time"])
        assert torch.allclose(batch["mask_rate"], expected, atol=1.0 / batch["num_maskable"].min().item() + 1e-6)


def test_continuous_times_are_antithetic_across_the_batch(story_tokenizer):
    collator = DiffusionCollator(story_tokenizer, seed=7)
    t = collator.sample_times(16).sort().values
    gaps = t.diff()
    # One random offset, then evenly spaced: every gap is (1 - eps) / batch.
    assert torch.allclose(gaps, torch.full_like(gaps, (1 - 1e-3) / 16), atol=1e-5)
    assert t.min() > 0 and t.max() <= 1


def test_discrete_mode_uses_one_level_per_batch(story_tokenizer, packed_rows):
    collator = DiffusionCollator(story_tokenizer, mask_rates="discrete", seed=8)
    levels = set()
    for _ in range(30):
        t = collator(batch_of(packed_rows, 8))["mask_time"]
        assert (t == t[0]).all()
        levels.add(round(t[0].item(), 1))
    assert levels <= {round(0.1 * i, 1) for i in range(1, 11)} and len(levels) > 3


def test_evaluation_masks_identically_after_reset(story_tokenizer, packed_rows):
    collator = DiffusionCollator(story_tokenizer, evaluation=True, seed=9)
    first = collator(batch_of(packed_rows, 20))
    collator.reset()
    second = collator(batch_of(packed_rows, 20))
    assert torch.equal(first["input_ids"], second["input_ids"])
    # The antithetic draw: one offset, times 1/20 apart, every one in (0, 1] and none from a training window.
    times = first["mask_time"].sort().values
    assert torch.allclose(times.diff(), torch.full((19,), 1 / 20), atol=1e-5)
    assert 0 < times[0] <= 1 / 20 and times[-1] <= 1


def test_evaluation_times_are_uniform_over_seeds(story_tokenizer, packed_rows):
    # Each time alone is uniform on (0, 1]: over many seeds its mean is 1/2 and its quartiles 1/4 and 3/4, which
    # is what makes the logged bound unbiased (fixed midpoints were not).
    times = torch.stack([DiffusionCollator(story_tokenizer, evaluation=True, seed=s, min_mask_time=0.3).sample_times(3)
                         for s in range(2000)])
    assert times[:, 0].mean() == pytest.approx(0.5, abs=0.02)
    assert times[:, 0].quantile(0.25) == pytest.approx(0.25, abs=0.03) and times.min() < 0.05


def test_at_least_one_token_is_masked_per_row(story_tokenizer, packed_rows):
    collator = DiffusionCollator(story_tokenizer, eval_times=torch.tensor([1e-6]), seed=10)
    batch = collator(batch_of(packed_rows, 8))
    assert ((batch["labels"] != -100).sum(-1) == 1).all()


def test_elbo_weight_is_one_over_t_for_linear():
    t = torch.tensor([0.1, 0.5, 1.0])
    assert torch.allclose(elbo_weight("linear", t), 1.0 / t)
    # cosine: m = sin(pi t / 2), m' / m = (pi / 2) cot(pi t / 2)
    assert torch.allclose(elbo_weight("cosine", torch.tensor([0.5])), torch.tensor([math.pi / 2]), atol=1e-5)


def test_collator_is_vectorised(story_tokenizer, packed_rows, monkeypatch):
    # No per-row Python loop: a batch of 256 rows draws its randomness in as many calls as a batch of 4.
    collator = DiffusionCollator(story_tokenizer, seed=11, prefix_length=3, prefix_policy="random")
    calls = []
    for name in ("rand", "randint"):
        draw = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *args, draw=draw, **kwargs: calls.append(args) or draw(*args, **kwargs))
    counts = []
    for size in (4, 256):
        calls.clear()
        batch = collator((batch_of(packed_rows, min(len(packed_rows), 64)) * 4)[:size])
        assert batch["input_ids"].shape[0] == size
        counts.append(len(calls))
    assert counts[0] == counts[1] <= 3  # the prefix lengths, the time offset, the scores


def test_loss_weight_is_maskable_over_masked_for_linear(story_tokenizer, packed_rows):
    batch = DiffusionCollator(story_tokenizer, seed=12)(batch_of(packed_rows, 16))
    masked = (batch["labels"] != -100).sum(-1)
    assert torch.allclose(batch["loss_weight"], batch["num_maskable"] / masked)


def test_times_stay_inside_the_window(story_tokenizer):
    collator = DiffusionCollator(story_tokenizer, min_mask_time=0.2, max_mask_time=0.6, seed=3)
    t = torch.cat([collator.sample_times(64) for _ in range(20)])
    assert t.min() >= 0.2 and t.max() <= 0.6 and t.max() - t.min() > 0.35


def test_bell_times_are_beta_2_2_quantiles_spread_antithetically(story_tokenizer):
    collator = DiffusionCollator(story_tokenizer, min_mask_time=1e-9, time_sampling="bell", seed=4)
    t = collator.sample_times(1000)
    # Evenly spaced quantiles of Beta(2, 2): its CDF 3x^2 - 2x^3 at the sorted times is evenly spaced too.
    cdf = (3 * t**2 - 2 * t**3).sort().values.double()
    assert torch.allclose(cdf.diff(), torch.full((999,), 1e-3, dtype=torch.float64), atol=1e-5)
    middle = ((t > 0.25) & (t < 0.75)).float().mean().item()
    assert middle == pytest.approx(0.6875, abs=0.002)  # F(0.75) - F(0.25); uniform times give 0.5


def test_the_curriculum_starts_with_light_masks_and_widens_to_the_whole_window(story_tokenizer):
    step = TrainingStep()
    collator = DiffusionCollator(story_tokenizer, min_mask_time=0.01, curriculum_steps=100, seed=5, training_step=step)
    assert collator.sample_times(256).max() <= 0.01 + 0.99 * 0.2 + 1e-6
    step.on_step_begin(None, SimpleNamespace(global_step=50), None)
    assert 0.45 < collator.sample_times(256).max() <= 0.01 + 0.99 * 0.5 + 1e-6
    step.on_step_begin(None, SimpleNamespace(global_step=100), None)
    assert collator.sample_times(256).max() > 0.99


def test_repeat_masking_masks_every_later_uncommon_occurrence_in_the_chosen_rows(story_tokenizer):
    # A chosen row: its repeats masked plus a light random mask (data_collator.REPEAT_ROW_EXTRA) instead of the draw;
    # repeats of common tokens ("the", ".") are left alone.
    stories = ["the day tom found a red ball in the park . then tom gave the red ball to anna ."] * 4
    rows = [{"input_ids": story_tokenizer(s)["input_ids"]} for s in stories]
    common = {story_tokenizer.convert_tokens_to_ids(story_tokenizer.tokenize(w))[-1] for w in (" the", " .")}
    plain = DiffusionCollator(story_tokenizer, line_by_line=True, seed=5, min_mask_time=0.01, max_mask_time=0.02)(rows)
    biased = DiffusionCollator(story_tokenizer, line_by_line=True, seed=5, min_mask_time=0.01, max_mask_time=0.02,
                               repeat_mask_share=1.0, common_token_ids=common)(rows)
    ids = torch.tensor(rows[0]["input_ids"])
    later = torch.tensor([bool((ids[:j] == ids[j]).any()) for j in range(len(ids))])
    later &= ids != story_tokenizer.eos_token_id
    is_common = torch.isin(ids, torch.tensor(sorted(common)))
    masked = biased["labels"] != -100
    assert is_common.sum() >= 4 and later[is_common].sum() >= 2
    assert masked[:, later & ~is_common].all()  # tom, red, ball again: all masked
    assert masked[:, later & is_common].float().mean() < 0.5  # "the" and "." again: only the light random mask
    first = ~later & (ids != story_tokenizer.bos_token_id)
    assert not masked[:, 0].any() and (masked[:, first].float().mean() < 0.4)  # most first occurrences stay visible
    assert torch.equal(biased["input_ids"][masked], torch.full((int(masked.sum()),), story_tokenizer.mask_token_id))
    assert torch.equal(biased["labels"][masked], ids.expand(4, -1)[masked])
    off = DiffusionCollator(story_tokenizer, line_by_line=True, seed=5, min_mask_time=0.01, max_mask_time=0.02,
                            repeat_mask_share=0.0)(rows)
    assert torch.equal(off["input_ids"], plain["input_ids"])  # off: the same batches as before the option existed


def test_common_tokens_are_those_in_a_given_share_of_rows():
    rows = [[1, 2, 2, 3], [1, 4], [1, 2, 5], [1, 6, 6, 6, 6]]
    assert DiffusionCollator.common_tokens(rows, share=0.5) == {1, 2}
    assert DiffusionCollator.common_tokens(rows, share=1.0) == {1}


def test_repeat_mask_steps_mask_every_row_for_copying_then_the_share(story_tokenizer):
    stories = ["the day tom found a red ball in the park . then tom gave the red ball to anna ."] * 64
    rows = [{"input_ids": story_tokenizer(s)["input_ids"]} for s in stories]
    ids = torch.tensor(rows[0]["input_ids"])
    later = torch.tensor([bool((ids[:j] == ids[j]).any()) for j in range(len(ids))]) & (ids != story_tokenizer.eos_token_id)
    step = TrainingStep()
    collator = DiffusionCollator(story_tokenizer, line_by_line=True, seed=3, repeat_mask_steps=10, repeat_mask_share=0.0,
                                 training_step=step)
    step.on_step_begin(None, SimpleNamespace(global_step=9), None)
    warm = collator(rows)["labels"] != -100
    assert warm[:, later].all()  # every row: all repeats masked
    step.on_step_begin(None, SimpleNamespace(global_step=10), None)
    after = collator(rows)["labels"] != -100
    assert not after[:, later].all(dim=1).all()  # share 0 after the warm-up: the drawn masks only
    assert after.sum(-1).float().std() > 2  # rates vary from row to row again


def test_copy_rows_hide_the_end_token_filler_of_line_by_line_rows(story_tokenizer):
    # <s> story </s> </s> </s>: in a copy row the filler after the first end token is neither attended nor a target.
    ids = story_tokenizer("the day tom found a red ball . then tom gave the red ball to anna .")["input_ids"]
    end = story_tokenizer.eos_token_id
    rows = [{"input_ids": ids + [end] * 6}] * 8
    length = len(ids) + 6
    out = DiffusionCollator(story_tokenizer, line_by_line=True, seed=1, repeat_mask_share=1.0)(rows)
    filler = torch.arange(length) >= len(ids)
    assert out["attention_mask"][:, filler].eq(0).all() and out["attention_mask"][:, ~filler].eq(1).all()
    assert out["labels"][:, filler].eq(-100).all()
    plain = DiffusionCollator(story_tokenizer, line_by_line=True, seed=1, min_mask_time=0.9)(rows)
    assert plain["attention_mask"].eq(1).all() and (plain["labels"][:, filler] == end).any()  # drawn rows keep them


def test_copy_rows_in_both_directions_hide_the_first_mentions_in_about_half_of_them(story_tokenizer):
    stories = ["the day tom found a red ball in the park . then tom gave the red ball to anna ."] * 200
    rows = [{"input_ids": story_tokenizer(s)["input_ids"]} for s in stories]
    ids = torch.tensor(rows[0]["input_ids"])
    common = {story_tokenizer.convert_tokens_to_ids(story_tokenizer.tokenize(w))[-1] for w in (" the", " .")}
    uncommon = ~torch.isin(ids, torch.tensor(sorted(common))) & (ids != story_tokenizer.eos_token_id)
    later = torch.tensor([bool((ids[:j] == ids[j]).any()) for j in range(len(ids))]) & uncommon
    first = torch.tensor([bool((ids[j + 1:] == ids[j]).any()) for j in range(len(ids))]) & uncommon
    assert later.sum() == first.sum() == 3  # tom, red, ball
    collator = DiffusionCollator(story_tokenizer, line_by_line=True, seed=2, repeat_mask_share=1.0, common_token_ids=common,
                                 repeat_mask_direction="both")
    masked = collator(rows)["labels"] != -100
    forward, backward = masked[:, later].all(-1), masked[:, first].all(-1)
    assert (forward | backward).all()  # every row hides one side of every repeated word ...
    assert 0.35 < backward.float().mean() < 0.65 and 0.35 < forward.float().mean() < 0.65  # ... each side in about half
    with pytest.raises(ValueError, match="repeat_mask_direction"):
        DiffusionCollator(story_tokenizer, repeat_mask_direction="sideways")
