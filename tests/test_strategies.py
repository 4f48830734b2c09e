"""The sampler's strategies and denoisers: one registry of strategies whose names only it reads, each declaring its
own options; end-after-text as a filter around the certainty-ordered ones; one denoiser interface for plain masked
LMs and block models."""

import ast
import inspect
from pathlib import Path

import pytest
import torch
from transformers import HfArgumentParser

import config
from textdiffusion import blocks, masking, sampling
from textdiffusion.errors import SettingsError
from textdiffusion.models.heads import Denoiser, MaskedLM, as_denoiser
from textdiffusion.sampling import strategies

LIBRARY = Path(__file__).resolve().parents[1] / "textdiffusion"


def test_strategy_choices_on_the_command_line_are_the_registry_keys_and_auto():
    actions = HfArgumentParser(config.SamplingArguments)._option_string_actions
    assert tuple(actions["--strategy"].choices) == (sampling.AUTO, *sampling.STRATEGIES)
    assert all(cls.name == name for name, cls in sampling.STRATEGIES.items())


def _names_strategy(node: ast.AST) -> bool:
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name.endswith("strategy")


def _is_text(node: ast.AST) -> bool:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(map(_is_text, node.elts))
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def test_no_strategy_name_is_compared_outside_the_registry():
    compared = []
    for path in sorted(LIBRARY.rglob("*.py")):
        if path.name == "strategies.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            operands = (node.left, *node.comparators) if isinstance(node, ast.Compare) else ()
            if any(map(_names_strategy, operands)) and any(map(_is_text, operands)):
                compared.append(f"{path.relative_to(LIBRARY)}:{node.lineno}")
    assert compared == []


def test_the_sampling_loop_is_short():
    assert len(inspect.getsource(sampling.sample).splitlines()) <= 60


def test_each_option_is_refused_with_every_strategy_that_does_not_declare_it():
    for option, declared in sampling.strategy_options().items():
        value = {"confidence": "margin", "entropy_budget": 2.0, "remask_eta": 0.5, "remask_schedule": "rescale"}.get(option)
        if value is None:
            continue  # the loop options need remask_schedule loop too (checked on their own)
        for strategy in (sampling.AUTO, *sampling.STRATEGIES):
            settings = sampling.GenerationSettings(strategy=strategy, **{option: value})
            if strategy in declared:
                settings.check()
            else:
                with pytest.raises(SettingsError, match=f"{option} {value} has no meaning with strategy {strategy}"):
                    settings.check()
    assert sampling.strategy_options()["entropy_budget"] == ("entropy-bounded",)
    assert sampling.strategy_options()["confidence"] == ("auto", "confidence", "threshold", "entropy-bounded", "adaptive")


def test_an_unknown_strategy_names_the_choices():
    with pytest.raises(SettingsError, match="strategy 'greedy' is unknown; choose one of remask, random"):
        sampling.strategy_for(sampling.SamplerConfig(strategy="greedy"))


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_end_after_text_wraps_exactly_the_certainty_ordered_strategies(strategy):
    config = sampling.SamplerConfig(strategy=strategy)
    wrapped = sampling.strategy_for(config, end_token_id=2)
    assert isinstance(wrapped, strategies.EndAfterText) == (strategy in ("confidence", "threshold", "entropy-bounded", "adaptive"))
    assert wrapped.until_done == sampling.STRATEGIES[strategy].until_done
    assert not isinstance(sampling.strategy_for(config), strategies.EndAfterText)  # no end token: nothing to filter
    assert not isinstance(sampling.strategy_for(sampling.SamplerConfig(strategy=strategy, end_after_text=False), 2),
                          strategies.EndAfterText)


def test_a_masked_lm_as_denoiser_gives_the_full_models_logits_where_asked(tiny_mlm, story_tokenizer):
    ids = sampling.build_inputs(story_tokenizer, "tom found", 24, 2)
    where = ids == story_tokenizer.mask_token_id
    with torch.no_grad():
        full = tiny_mlm(input_ids=ids).logits[where]
        for denoiser in (MaskedLM(tiny_mlm), MaskedLM(tiny_mlm, sparse=False), as_denoiser(tiny_mlm)):
            assert torch.allclose(denoiser.logits_at(ids, where), full, atol=1e-5)
    assert MaskedLM(tiny_mlm).block_size is None and MaskedLM(tiny_mlm, sparse=False).head is None


def test_a_block_model_is_a_denoiser_with_its_own_blocks(tiny_mlm):
    block_model = blocks.BlockModel(tiny_mlm, 8)
    assert isinstance(block_model, Denoiser) and block_model.block_size == 8
    assert as_denoiser(block_model) is block_model


class Scripted(Denoiser):
    """A denoiser that is no torch module: token 7 everywhere, certain; counts its calls and resets."""

    def __init__(self, vocab: int = 10):
        super().__init__(torch.nn.Linear(1, 1))
        self.vocab, self.calls, self.resets = vocab, 0, 0

    def logits_at(self, ids, where, attention_mask=None):
        self.calls += 1
        logits = torch.zeros(int(where.sum()), self.vocab)
        logits[:, 7] = 50.0
        return logits

    def reset(self):
        self.resets += 1


def test_the_sampler_needs_only_the_denoiser_interface():
    mask = 9
    ids = torch.full((2, 6), mask)
    ids[:, 0] = 1
    denoiser = Scripted()
    result = sampling.sample(denoiser, ids, mask, sampling.SamplerConfig(steps=3, strategy="confidence"), [mask],
                             torch.Generator().manual_seed(0))
    assert (result.ids[:, 1:] == 7).all() and result.nfe == denoiser.calls == 3 and denoiser.resets == 1



@pytest.mark.parametrize("strategy, options", [("threshold", {"threshold": 1.0}), ("entropy-bounded", {"entropy_budget": 1e-6})])
def test_a_step_cap_is_shared_out_by_the_schedule_not_crammed_into_the_last_step(tiny_mlm, story_tokenizer, strategy, options):
    # A random model is never sure and always uncertain: one position per pass at these strategies' own pace,
    # which cannot fit 23 positions in 4 steps; they then reveal the schedule's count, as adaptive does.
    ids = sampling.build_inputs(story_tokenizer, "", 24, 2)
    span, mask = int((ids[0] == story_tokenizer.mask_token_id).sum()), story_tokenizer.mask_token_id
    config = sampling.SamplerConfig(steps=4, strategy=strategy, **options)
    result = sampling.sample(tiny_mlm, ids, mask, config, [mask], torch.Generator().manual_seed(0))
    schedule = [round(float(masking.mask_fraction("cosine", torch.tensor(1 - k / 4, dtype=torch.float64))) * span) for k in range(5)]
    assert [int((step.ids[0] == mask).sum()) for step in result.trajectory] == schedule == [23, 21, 16, 9, 0]
    # With a step per position there is room at their own pace: one position per pass, as before.
    roomy = sampling.sample(tiny_mlm, ids, mask, sampling.SamplerConfig(steps=span, strategy=strategy, **options), [mask],
                            torch.Generator().manual_seed(0))
    assert all(int(step.revealed.sum(-1).max()) == 1 for step in roomy.trajectory[1:]) and roomy.nfe == span
