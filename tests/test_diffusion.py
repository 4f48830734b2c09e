"""diffusion.py: schedules, the training loss, and the sampler (sampling.sample) with its banned tokens."""

import copy
import math
import typing

import pytest
import torch
from transformers import HfArgumentParser

import config
from textdiffusion import masking, models, sampling
from textdiffusion.data import tokenization
from textdiffusion.errors import SettingsError
from textdiffusion.masking.loss import diffusion_loss

LENGTH = 24  # tokens per sample in these tests: short keeps the suite fast


def sample(model, tokenizer, *, prefix="", infill=None, batch=2, seed=0, allow_end=True, **settings):
    settings = {"steps": 4, **settings}
    ids = sampling.build_inputs(tokenizer, prefix, LENGTH, batch, infill, end_token=infill is not None)
    generator = torch.Generator().manual_seed(seed)
    banned = sampling.banned_token_ids(tokenizer, allow_end=allow_end)
    result = sampling.sample(model, ids, tokenizer.mask_token_id, sampling.SamplerConfig(**settings), banned, generator)
    return ids, result


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_sampler_leaves_no_mask_tokens(tiny_mlm, story_tokenizer, strategy):
    _, result = sample(tiny_mlm, story_tokenizer, prefix="tom found", strategy=strategy, steps=3)
    assert not (result.ids == story_tokenizer.mask_token_id).any()


@pytest.mark.parametrize("allow_end", [True, False])
def test_special_tokens_never_appear_inside_the_text(tiny_mlm, story_tokenizer, allow_end):
    # A random model puts mass on every token, so a ban that leaks shows up here.
    _, result = sample(tiny_mlm, story_tokenizer, batch=8, allow_end=allow_end, sampling="topk", top_k=500)
    end = tokenization.end_token_id(story_tokenizer)
    specials = set(tokenization.special_token_ids(story_tokenizer))
    for row in result.ids[:, 1:].tolist():
        text = row[: row.index(end)] if allow_end and end in row else row
        assert not specials & set(text)


def test_end_token_is_banned_unless_the_model_learned_to_end_documents(story_tokenizer):
    tok = story_tokenizer
    end = tokenization.end_token_id(tok)
    always = {tok.mask_token_id, tok.pad_token_id, tok.cls_token_id, tok.unk_token_id}
    assert always <= set(sampling.banned_token_ids(tok, allow_end=True))
    assert end not in sampling.banned_token_ids(tok, allow_end=True)
    assert always | {end} <= set(sampling.banned_token_ids(tok, allow_end=False))


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_prefix_tokens_never_change_in_any_step(tiny_mlm, story_tokenizer, strategy):
    ids, result = sample(tiny_mlm, story_tokenizer, prefix="tom found a red ball", strategy=strategy)
    fixed = ids != story_tokenizer.mask_token_id
    assert torch.equal(result.fixed, fixed)
    for step in result.trajectory:
        assert torch.equal(step.ids[fixed], ids[fixed])


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_infill_context_never_changes_in_any_step(tiny_mlm, story_tokenizer, strategy):
    ids, result = sample(tiny_mlm, story_tokenizer, infill="tom found a [MASK]*2 in the [MASK] .", strategy=strategy)
    fixed = ids != story_tokenizer.mask_token_id
    assert fixed.sum(-1).tolist() == [len(ids[0]) - 3] * 2
    for step in result.trajectory:
        assert torch.equal(step.ids[fixed], ids[fixed])


def test_infill_template_ends_with_a_fixed_end_token_for_line_by_line_models(story_tokenizer):
    end = tokenization.end_token_id(story_tokenizer)
    with_end = sampling.build_inputs(story_tokenizer, max_length=LENGTH, infill="tom [MASK]*2 .", end_token=True)
    without = sampling.build_inputs(story_tokenizer, max_length=LENGTH, infill="tom [MASK]*2 .")
    assert with_end[0, -1] == end and torch.equal(with_end[:, :-1], without)
    # A template that fills every position leaves no room: no end token, no error.
    full = sampling.build_inputs(story_tokenizer, max_length=5, infill="[MASK]*4", end_token=True)
    assert full.shape[1] == 5 and end not in full[0].tolist()


def test_remask_can_change_a_revealed_token(tiny_mlm, story_tokenizer):
    _, result = sample(tiny_mlm, story_tokenizer, strategy="remask", schedule="linear", steps=8)
    mask = story_tokenizer.mask_token_id
    changed = any(
        ((before.ids != mask) & (before.ids != after.ids)).any()
        for before, after in zip(result.trajectory, result.trajectory[1:])
    )
    assert changed
    assert any(step.remasked.any() for step in result.trajectory)


@pytest.mark.parametrize("strategy", ["random", "confidence", "threshold", "entropy-bounded"])
def test_other_strategies_never_change_a_revealed_token(tiny_mlm, story_tokenizer, strategy):
    _, result = sample(tiny_mlm, story_tokenizer, strategy=strategy, steps=8, threshold=0.01)
    mask = story_tokenizer.mask_token_id
    for before, after in zip(result.trajectory, result.trajectory[1:]):
        revealed_before = before.ids != mask
        assert torch.equal(after.ids[revealed_before], before.ids[revealed_before])
        assert not after.remasked.any()


def test_threshold_never_drops_a_mask_at_the_step_cap(tiny_mlm, story_tokenizer):
    # A random model is never 100% sure, so only the step cap can reveal the rest: it must fill, not drop.
    _, result = sample(tiny_mlm, story_tokenizer, strategy="threshold", threshold=1.0, steps=2)
    assert result.nfe == 2
    assert not (result.ids == story_tokenizer.mask_token_id).any()


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_same_seed_gives_same_ids(tiny_mlm, story_tokenizer, strategy):
    _, first = sample(tiny_mlm, story_tokenizer, strategy=strategy, seed=7)
    _, again = sample(tiny_mlm, story_tokenizer, strategy=strategy, seed=7)
    _, other = sample(tiny_mlm, story_tokenizer, strategy=strategy, seed=8)
    assert torch.equal(first.ids, again.ids)
    assert not torch.equal(first.ids, other.ids)


def test_nucleus_keeps_the_token_that_crosses_p():
    logits = torch.tensor([0.05, 0.5, 0.15, 0.3]).log()

    def kept(p):  # the tokens 4000 draws ever pick
        ids, _ = sampling.draw_tokens(logits.expand(4000, 4), "nucleus", top_p=p, generator=torch.Generator().manual_seed(0))
        return sorted(set(ids.tolist()))

    assert kept(0.6) == [1, 3]  # 0.5 < 0.6: the 0.3 token crosses p and stays
    assert kept(0.5) == [1]  # 0.5 already reaches p
    assert kept(0.01) == [1]  # the most likely token always stays
    assert kept(1.0) == [0, 1, 2, 3]


@pytest.mark.parametrize("method, settings", [("nucleus", {"top_p": 0.6}), ("topk", {"top_k": 2})])
def test_draws_follow_the_filtered_distribution(method, settings):
    logits = torch.tensor([0.05, 0.5, 0.15, 0.3]).log().expand(20000, 4)
    generator = torch.Generator().manual_seed(0)
    ids, confidence = sampling.draw_tokens(logits, method, generator=generator, **settings)
    expected = {1: 0.5 / 0.8, 3: 0.3 / 0.8}  # the kept tokens, renormalised
    assert set(ids.tolist()) == set(expected)
    for token, p in expected.items():
        assert (ids == token).double().mean().item() == pytest.approx(p, abs=0.015)
        assert confidence[ids == token].tolist() == pytest.approx([p] * int((ids == token).sum()))


def test_topk_keeps_exactly_k_tokens():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 0.5]])
    ids, _ = sampling.draw_tokens(logits.expand(4000, 5), "topk", top_k=2, generator=torch.Generator().manual_seed(0))
    assert sorted(set(ids.tolist())) == [1, 2]


@pytest.mark.parametrize("schedule", sorted(masking.SCHEDULES))
def test_schedule_is_one_at_t1_and_zero_at_t0(schedule):
    ends = masking.mask_fraction(schedule, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert ends.tolist() == pytest.approx([1.0, 0.0], abs=1e-9)
    inside = masking.mask_fraction(schedule, torch.linspace(0, 1, 101, dtype=torch.float64))
    assert (inside.diff() >= 0).all()  # more time, never fewer masks


def test_cli_choices_equal_the_sampler_tables():
    assert typing.get_args(sampling.SCHEDULE_CHOICES) == tuple(masking.SCHEDULES)
    assert typing.get_args(sampling.STRATEGY_CHOICES) == ("auto", *sampling.STRATEGIES)
    assert typing.get_args(sampling.SAMPLING_CHOICES) == sampling.SAMPLING_METHODS
    actions = HfArgumentParser(config.SamplingArguments)._option_string_actions
    assert tuple(actions["--schedule"].choices) == tuple(masking.SCHEDULES)
    assert tuple(actions["--strategy"].choices) == ("auto", *sampling.STRATEGIES)
    assert tuple(actions["--sampling"].choices) == sampling.SAMPLING_METHODS


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_trajectory_has_the_start_plus_one_entry_per_step(tiny_mlm, story_tokenizer, strategy):
    ids, result = sample(tiny_mlm, story_tokenizer, prefix="tom", strategy=strategy, steps=5, threshold=1.0)
    assert len(result.trajectory) == 5 + 1 == result.nfe + 1
    assert torch.equal(result.trajectory[0].ids, ids)
    assert torch.equal(result.trajectory[-1].ids, result.ids)


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_revealed_marks_exactly_the_positions_whose_mask_went_away(tiny_mlm, story_tokenizer, strategy):
    _, result = sample(tiny_mlm, story_tokenizer, strategy=strategy, steps=6, schedule="linear")
    mask = story_tokenizer.mask_token_id
    assert not result.trajectory[0].revealed.any()
    for before, after in zip(result.trajectory, result.trajectory[1:]):
        assert torch.equal(after.revealed, (before.ids == mask) & (after.ids != mask))
        assert torch.equal(after.remasked, (before.ids != mask) & (after.ids == mask))
        assert ((after.confidence > 0) == (after.ids != mask) & ~result.fixed).all()


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_block_decoding_fills_blocks_left_to_right(tiny_mlm, story_tokenizer, strategy):
    block = 8
    ids, result = sample(tiny_mlm, story_tokenizer, strategy=strategy, steps=6, block_size=block, schedule="linear")
    mask = story_tokenizer.mask_token_id
    start = int((ids[0] == mask).nonzero().min())  # first generated column
    blocks = [(s, min(s + block, LENGTH)) for s in range(start, LENGTH, block)]
    assert len(blocks) == math.ceil((LENGTH - start) / block)
    for before, after in zip(result.trajectory, result.trajectory[1:]):
        touched = (after.revealed | after.remasked).any(0).nonzero().flatten().tolist()
        if not touched:
            continue
        current = next(b for b, (lo, hi) in enumerate(blocks) if lo <= touched[0] < hi)
        lo, hi = blocks[current]
        assert all(lo <= column < hi for column in touched)  # one block per step
        assert not (before.ids[:, :lo] == mask).any()  # every earlier block already complete
        assert (before.ids[:, hi:] == mask).all()  # no later block started
    assert not (result.ids == mask).any()


def test_log_linear_is_mdlm_and_sedds_linear_masking_schedule():
    # MDLM/SEDD "log-linear noise": sigma(t) = -log(1 - t), so the kept share alpha_t = exp(-sigma) = 1 - t.
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(masking.mask_fraction("log-linear", t), 1 - torch.exp(torch.log1p(-t.clamp(max=1 - 1e-12))), atol=1e-9)
    assert torch.equal(masking.mask_fraction("log-linear", t), masking.mask_fraction("linear", t))
    assert (masking.mask_fraction("logarithmic", t[1:-1]) > t[1:-1]).all()  # the other curve: more masked early


# ----------------------------------------------------------------------------- the training loss


def test_elbo_weighting_matches_a_hand_computed_value():
    # Two rows, vocab of 3. Row 0 masks position 1 (label 2) at t=0.5; row 1 masks positions 0 and 1 at t=1.
    logits = torch.log(torch.tensor([
        [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]],
        [[0.7, 0.2, 0.1], [0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3]],
    ]))
    labels = torch.tensor([[-100, 2, -100], [0, 1, -100]])
    weight = torch.tensor([1 / 0.5, 1 / 1.0])  # 1/t, linear schedule
    num_maskable = torch.tensor([3, 3])
    ce0 = -math.log(0.8)
    ce1 = -math.log(0.7) - math.log(0.5)
    loss, _, count = diffusion_loss(logits, labels, weight, num_maskable, "elbo")
    assert loss.item() == pytest.approx((2 * ce0 + 1 * ce1) / 6, rel=1e-6)
    uniform, _, _ = diffusion_loss(logits, labels, weight, num_maskable, "uniform")
    assert uniform.item() == pytest.approx((ce0 + ce1) / 3, rel=1e-6)
    assert count.tolist() == [1, 2]


def test_the_mask_token_can_never_be_predicted():
    logits = torch.zeros(1, 2, 4)
    logits[..., 3] = 100.0  # the model loves token 3 (<mask>)
    labels = torch.tensor([[1, -100]])
    banned = torch.tensor([3])
    loss, _, _ = diffusion_loss(logits, labels, torch.ones(1), torch.tensor([2]), "uniform", banned)
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)  # uniform over the 3 allowed tokens


# ----------------------------------------------------------------------------- arguments


# ----------------------------------------------------------------------------- certainty, entropy-bounded, ReMDM


def test_margin_and_entropy_order_positions_differently_from_top_probability():
    # Row 0: a near tie at the top (p1 high, margin tiny); row 1: a clear winner over a flat tail (p1 lower).
    probs = torch.tensor([[0.50, 0.49, 0.01, 0.0, 0.0], [0.40, 0.15, 0.15, 0.15, 0.15]])
    logits = probs.log()
    top = probs.max(-1).values
    margin = sampling.certainty(logits, "margin", top)
    assert margin.tolist() == pytest.approx([0.01, 0.25])
    assert sampling.certainty(logits, "prob", top).tolist() == pytest.approx([0.50, 0.40])
    h = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
    kept = torch.tensor([3.0, 5.0])  # -inf logits are not choices
    assert sampling.certainty(logits, "entropy", top).tolist() == pytest.approx((1 - h / kept.log()).tolist(), abs=1e-6)
    assert sampling.entropy(logits).tolist() == pytest.approx(h.tolist(), abs=1e-6)


def test_entropy_bounded_reveals_the_longest_prefix_within_the_budget():
    entropies = torch.tensor([[2.0, 0.1, 0.5, 0.2, 9.0]])
    scores = -entropies  # most certain = lowest entropy first: 0.1, 0.2, 0.5, 2.0, 9.0
    candidates = torch.tensor([[True, True, True, True, False]])  # the 9.0 position is not masked
    count = lambda budget: int(sampling.entropy_bounded_count(entropies, scores, candidates, budget))
    # prefix sums less their largest: 0, 0.1, 0.3, 0.8
    assert [count(b) for b in (0.05, 0.15, 0.35, 0.75, 0.85, 100.0)] == [1, 2, 3, 3, 4, 4]


def test_entropy_bounded_reveals_more_per_pass_with_a_larger_budget(tiny_mlm, story_tokenizer):
    small = sample(tiny_mlm, story_tokenizer, strategy="entropy-bounded", entropy_budget=1e-3, steps=LENGTH)[1]
    large = sample(tiny_mlm, story_tokenizer, strategy="entropy-bounded", entropy_budget=1e6, steps=LENGTH)[1]
    generated = int(small.trajectory[0].ids.eq(story_tokenizer.mask_token_id).sum(-1).max())
    assert small.nfe == generated  # a random model is uncertain everywhere: one position per pass
    assert large.nfe == 1  # everything fits the budget: one pass
    for result in (small, large):
        assert not (result.ids == story_tokenizer.mask_token_id).any()


def test_remdm_sigma_caps_or_rescales_the_largest_possible_remasking():
    alpha_t, alpha_s = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.75, dtype=torch.float64)
    # sigma_max = (1 - 0.75) / 0.5 = 0.5
    assert float(sampling.remdm_sigma("cap", 0.2, alpha_t, alpha_s)) == pytest.approx(0.2)
    assert float(sampling.remdm_sigma("cap", 0.9, alpha_t, alpha_s)) == pytest.approx(0.5)
    assert float(sampling.remdm_sigma("rescale", 0.5, alpha_t, alpha_s)) == pytest.approx(0.25)
    assert float(sampling.remdm_sigma("cap", 1.0, torch.tensor(0.5), torch.tensor(1.0))) == 0.0  # the last step


@pytest.mark.parametrize("remask_schedule", ["cap", "rescale", "conf"])
def test_remdm_changes_decoded_tokens_and_ends_with_none_masked(tiny_mlm, story_tokenizer, remask_schedule):
    ids, result = sample(tiny_mlm, story_tokenizer, prefix="tom", strategy="remdm", schedule="linear", steps=10,
                         remask_eta=1.0, remask_schedule=remask_schedule)
    mask = story_tokenizer.mask_token_id
    assert any(step.remasked.any() for step in result.trajectory)
    assert not (result.ids == mask).any()
    span = int((ids[0] == mask).sum())
    for k, step in enumerate(result.trajectory):  # the masked share still follows the schedule: m(t) = t
        assert int((step.ids[0] == mask).sum()) == round((1 - k / 10) * span)
    for step in result.trajectory:
        assert torch.equal(step.ids[result.fixed], ids[result.fixed])


def test_remdm_with_eta_zero_never_remasks(tiny_mlm, story_tokenizer):
    _, result = sample(tiny_mlm, story_tokenizer, strategy="remdm", schedule="linear", steps=6, remask_eta=0.0)
    assert not any(step.remasked.any() for step in result.trajectory)


@pytest.mark.parametrize("architecture", models.ARCHITECTURES)
def test_logits_only_where_needed_give_the_same_tokens_as_the_full_head(architecture, story_tokenizer):
    torch.manual_seed(0)
    model = models.build_model("diffusion", "tiny", story_tokenizer, 32, 0.0, architecture).eval()
    assert models.prediction_head(model) is not None
    ids = sampling.build_inputs(story_tokenizer, "tom found", 24, 3)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        where = ids == story_tokenizer.mask_token_id
        sparse = models.masked_logits(model, models.prediction_head(model), ids, torch.ones_like(ids), where)
    assert torch.allclose(sparse, full[where], atol=1e-5)
    for strategy in ("confidence", "remdm"):
        runs = [sampling.sample(model, ids, story_tokenizer.mask_token_id,
                                 sampling.SamplerConfig(steps=6, strategy=strategy, sparse_logits=sparse_logits),
                                 sampling.banned_token_ids(story_tokenizer, True), torch.Generator().manual_seed(5))
                for sparse_logits in (True, False)]
        assert torch.equal(runs[0].ids, runs[1].ids)


# ----------------------------------------------------------------------------- classifier-free guidance


def test_guidance_moves_the_logits_away_from_the_unconditional_ones():
    cond, uncond = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[1.0, 1.0, -1.0]])
    assert torch.equal(sampling.guided(cond, uncond, 0.0), cond)
    assert torch.equal(sampling.guided(cond, uncond, 1.0), torch.tensor([[3.0, -1.0, -1.0]]))


def test_cfg_scale_zero_is_unguided_and_a_positive_scale_costs_two_passes(tiny_mlm, story_tokenizer):
    plain = sample(tiny_mlm, story_tokenizer, prefix="tom found a red ball", strategy="confidence", seed=3)[1]
    zero = sample(tiny_mlm, story_tokenizer, prefix="tom found a red ball", strategy="confidence", seed=3, cfg_scale=0.0)[1]
    ids, guided = sample(tiny_mlm, story_tokenizer, prefix="tom found a red ball", strategy="confidence", seed=3, cfg_scale=3.0)
    assert torch.equal(plain.ids, zero.ids)
    assert guided.nfe == 2 * plain.nfe
    assert torch.equal(guided.ids[guided.fixed], ids[guided.fixed])  # the prompt itself never changes
    assert not (guided.ids == story_tokenizer.mask_token_id).any()
    assert not torch.equal(guided.ids, plain.ids)


# ----------------------------------------------------------------------------- a causal-LM guide


def test_product_of_experts_is_the_weighted_geometric_mixture():
    p, q = torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([[0.1, 0.3, 0.6]])
    mixed = sampling.product_of_experts(p.log() + 5.0, q.log() - 2.0, 0.25).softmax(-1)  # shifts do not matter
    expected = p ** 0.75 * q ** 0.25
    assert torch.allclose(mixed, expected / expected.sum(), atol=1e-6)
    assert torch.allclose(sampling.product_of_experts(p.log(), q.log(), 0.0).exp(), p, atol=1e-6)
    banned = sampling.product_of_experts(torch.tensor([[0.0, float("-inf")]]), torch.tensor([[0.0, 0.0]]), 0.5)
    assert banned[0, 1] == float("-inf")


def test_the_trajectory_records_what_the_sampler_weighed(tiny_mlm, story_tokenizer):
    _, result = sample(tiny_mlm, story_tokenizer, prefix="tom", strategy="confidence", sampling="greedy", steps=5, candidates=3)
    assert result.trajectory[0].candidates is None
    assert sample(tiny_mlm, story_tokenizer, steps=2)[1].trajectory[1].candidates is None  # not asked for: not recorded  # the start: nothing weighed yet
    for before, step in zip(result.trajectory, result.trajectory[1:]):
        drawn = before.ids == story_tokenizer.mask_token_id  # every masked position was drawn for
        assert ((step.candidates[..., 0] >= 0) == drawn).all()
        probs = step.candidate_probs[drawn]
        assert (probs[:, :-1] >= probs[:, 1:]).all() and (probs.sum(-1) <= 1 + 1e-5).all()
        # greedy: each revealed token is the top candidate, with that probability
        assert torch.equal(step.ids[step.revealed], step.candidates[..., 0][step.revealed])
        assert torch.allclose(step.confidence[step.revealed], step.candidate_probs[..., 0][step.revealed], atol=1e-5)


def test_remdm_loop_holds_the_decoded_share_while_it_remasks_and_finishes_unmasked(tiny_mlm, story_tokenizer):
    steps, on, off, alpha = 20, 0.55, 0.05, 0.9
    ids, result = sample(tiny_mlm, story_tokenizer, prefix="tom", strategy="remdm", schedule="linear", steps=steps,
                         remask_eta=0.3, remask_schedule="loop", loop_on=on, loop_off=off, loop_alpha=alpha)
    mask = story_tokenizer.mask_token_id
    span = int((ids[0] == mask).sum())
    for k, step in enumerate(result.trajectory):
        t = 1 - k / steps
        assert int((step.ids[0] == mask).sum()) == round(sampling.loop_masked_share(t, on, off, alpha) * span)
        t_before = 1 - (k - 1) / steps
        if k and step.remasked.any():  # re-masking happens inside the loop only
            assert t_before <= on + 1e-9 and t >= off - 1e-9
    assert any(step.remasked.any() for step in result.trajectory)
    assert not (result.ids == mask).any()
    assert sampling.loop_masked_share(1.0, on, off, alpha) == 1.0 and sampling.loop_masked_share(0.0, on, off, alpha) == 0.0


def test_ends_after_text_lets_an_end_run_grow_only_from_revealed_text():
    E = 9
    masked = torch.tensor([[False, True, True, True, True], [False, False, True, True, True], [False, True, True, True, False]])
    proposal = torch.tensor([[5, 3, E, E, E], [5, 3, E, E, E], [5, E, 4, E, E]])
    assert sampling.ends_after_text(masked, proposal, E).tolist() == [
        [False, False, False, False, False],  # the run 2-4 follows a masked word: held
        [False, False, True, True, True],  # it follows revealed text: the whole run may go
        [False, True, False, False, False],  # right after the start; the end at 3 follows a masked word
    ]


def _end_biased(model, end: int, bias: float = 4.0):
    """A copy of `model` whose output layer favours the end token: it proposes it almost everywhere."""
    biased = copy.deepcopy(model)
    with torch.no_grad():
        biased.get_output_embeddings().bias[end] += bias
    return biased


@pytest.mark.parametrize("strategy", ["threshold", "confidence", "entropy-bounded"])
def test_end_tokens_are_revealed_only_right_after_revealed_text(tiny_mlm, story_tokenizer, strategy):
    end = tokenization.end_token_id(story_tokenizer)
    model = _end_biased(tiny_mlm, end)
    ids = sampling.build_inputs(story_tokenizer, "", LENGTH, 4, None, end_token=False)
    banned = sampling.banned_token_ids(story_tokenizer, allow_end=True)

    def early_ends(end_after_text: bool) -> int:
        config = sampling.SamplerConfig(steps=LENGTH, strategy=strategy, end_after_text=end_after_text)
        result = sampling.sample(model, ids, story_tokenizer.mask_token_id, config, banned, torch.Generator().manual_seed(0),
                                  end_token_id=end)
        assert not (result.ids == story_tokenizer.mask_token_id).any()
        mask = story_tokenizer.mask_token_id
        return sum(int(((step.ids == end)[:, 1:] & (step.ids == mask)[:, :-1]).sum()) for step in result.trajectory[1:])

    assert early_ends(True) == 0
    assert early_ends(False) > 0  # without the rule the ends cascade in from the tail


def test_geometric_schedule_is_sedds_noise_rescaled_to_its_ends():
    # SEDD: total noise sigma(t) = 1e-4^(1-t) * 20^t, masked share 1 - exp(-sigma(t)); rescaled so m(0) = 0, m(1) = 1.
    t = torch.tensor([0.25, 0.5, 0.9], dtype=torch.float64)
    raw = 1 - torch.exp(-(1e-4 ** (1 - t)) * 20.0**t)
    low, high = 1 - math.exp(-1e-4), 1 - math.exp(-20.0)
    assert torch.allclose(masking.mask_fraction("geometric", t), (raw - low) / (high - low))


class CertainAtFirst(torch.nn.Module):
    """Logits for every position: +30 on token 5 at the first `certain` positions, flat elsewhere."""

    def __init__(self, certain: int, vocab: int = 20):
        super().__init__()
        self.certain, self.vocab = certain, vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the sampler reads the device off a parameter

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[:, : self.certain, 5] = 30.0
        return type("Output", (), {"logits": logits})


def test_adaptive_reveals_every_certain_position_at_once_then_the_rest_in_random_order_on_schedule():
    mask, length, certain = 19, 12, 6
    ids = torch.full((1, length), mask)
    config = sampling.SamplerConfig(strategy="adaptive", steps=4, schedule="linear", sparse_logits=False, top_k=50)

    def run(seed):
        return sampling.sample(CertainAtFirst(certain), ids, mask, config, [mask], torch.Generator().manual_seed(seed))

    result = run(0)
    first = result.trajectory[1].revealed[0]
    assert first.nonzero().flatten().tolist() == list(range(certain))  # all six certain ones, nothing else (schedule: 3)
    assert result.nfe == 4 and not (result.ids == mask).any()
    masked_after = [int((step.ids == mask).sum()) for step in result.trajectory]
    # the linear schedule keeps 9, 6, 3, 0 masked after steps 1-4; the certain ones went early, then one at least per step
    assert masked_after == [12, 6, 5, 3, 0]
    # the uncertain positions are taken in random order: another seed reveals another one at step 2
    second = {tuple(run(seed).trajectory[2].revealed[0].nonzero().flatten().tolist()) for seed in range(6)}
    assert len(second) > 1


def test_auto_strategy_is_threshold_for_line_by_line_models_and_adaptive_or_confidence_for_packed_text():
    for line_by_line, characters, expected in ((True, False, "threshold"), (False, False, "adaptive"),
                                               (False, True, "confidence"), (True, True, "threshold")):
        settings = sampling.GenerationSettings()
        resolved = settings.resolved(48, line_by_line, characters)
        assert resolved.strategy == expected and settings.strategy == "auto"  # a copy: the caller's stay as given
    assert sampling.GenerationSettings(strategy="threshold").resolved(48, False).strategy == "threshold"  # a strategy the user names is kept
    assert sampling.GenerationSettings(strategy="adaptive").resolved_steps == 48 // 4
    assert sampling.GenerationSettings().resolved(48, True).steps == 48  # threshold's steps are a cap: one per position
    sampling.GenerationSettings(confidence="margin").check()  # auto orders by certainty either way
    with pytest.raises(SettingsError, match="remask_eta 0.5 has no meaning with strategy auto"):
        sampling.GenerationSettings(remask_eta=0.5).check()


def test_resolved_settings_fit_the_length_and_are_checked_without_changing_the_callers():
    settings = sampling.GenerationSettings(max_length=50, steps=None)
    resolved = settings.resolved(32, line_by_line=True)
    assert (resolved.max_length, resolved.steps, resolved.strategy) == (32, 32, "threshold")
    assert (settings.max_length, settings.steps, settings.strategy) == (50, None, "auto")
    with pytest.raises(SettingsError, match="max_length 50 is more than the model's 32 positions"):
        settings.resolved(32, line_by_line=False)
    with pytest.raises(SettingsError, match="entropy_budget 2.0 has no meaning with strategy confidence"):
        sampling.GenerationSettings(entropy_budget=2.0).resolved(48, line_by_line=False, characters=True)


def test_generate_resolves_auto_from_the_checkpoint(tiny_checkpoint):
    checkpoint = models.load_checkpoint(tiny_checkpoint)
    settings = sampling.GenerationSettings(num_samples=1, max_length=16)
    out = sampling.generate(checkpoint, settings, progress=False)
    assert out.settings.strategy == ("threshold" if checkpoint.line_by_line else "adaptive")
    assert settings.strategy == "auto"


def test_generate_resolves_auto_to_confidence_for_a_packed_character_model():
    text = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"]
    characters = tokenization.train_tokenizer(text, "char", 100)
    assert tokenization.is_character_level(characters)
    assert not tokenization.is_character_level(tokenization.train_tokenizer(text, "bpe", 300))
    assert not tokenization.is_character_level(tokenization.train_tokenizer(text, "word", 100))
    checkpoint = models.Checkpoint("", models.build_model("diffusion", "tiny", characters, 16).eval(), characters,
                                   models.DiffusionConfig(line_by_line=False, max_length=16))
    settings = sampling.GenerationSettings(num_samples=2, max_length=16)
    out = sampling.generate(checkpoint, settings, progress=False)
    assert out.settings.strategy == "confidence" and out.settings.steps == 4 and out.nfe == 4
