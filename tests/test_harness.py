"""The lm-evaluation-harness model type: its log-likelihoods are the project's bound, its generations generate()'s."""

import math

import pytest
import torch
from lm_eval.api.instance import Instance

from textdiffusion import models
from textdiffusion.data import corpus, tokenization
from textdiffusion.errors import SettingsError
from textdiffusion.metrics import harness, likelihood
from textdiffusion.sampling import GenerationSettings, generate


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


@pytest.fixture(scope="module")
def packed_checkpoint(tmp_path_factory, story_tokenizer):
    """A random tiny RoBERTa of 32 positions trained (nominally) on packed text."""
    directory = tmp_path_factory.mktemp("packed")
    torch.manual_seed(0)
    models.build_model("diffusion", "tiny", story_tokenizer, 32).save_pretrained(directory)
    story_tokenizer.save_pretrained(directory)
    models.DiffusionConfig(line_by_line=False, max_length=32).save(directory)
    return str(directory)


def test_the_continuation_bound_is_the_projects_bound_with_the_context_visible(packed_checkpoint, story_tokenizer):
    checkpoint = models.load_checkpoint(packed_checkpoint)
    # One running text: no end token between documents (the bound leaves those unmasked and unscored).
    rows = tokenization.tokenize_documents(story_tokenizer, [" ".join(corpus.generate_corpus(80, seed=2))], 32, line_by_line=False)
    rows = torch.tensor(rows["input_ids"][:12])
    visible = 10  # tokens after <s> kept visible: the context
    project = likelihood.elbo_bound(checkpoint.model, story_tokenizer, rows, prefix_length=visible, num_t_samples=64, seed=3)
    pairs = [(row[1 : 1 + visible], row[1 + visible :]) for row in rows.tolist()]
    bounds = likelihood.continuation_bound(checkpoint.model, story_tokenizer, pairs, 32, mc_num=64, seed=4)
    total, error = sum(b for b, _ in bounds), math.sqrt(sum(e * e for _, e in bounds))
    assert project.tokens == sum(len(c) for _, c in pairs)
    assert abs(total - project.total_nats) < 4 * error + 0.01 * total, (total, project.total_nats, error)


def test_loglikelihood_is_minus_the_bound_and_greedy_says_whether_greedy_decoding_writes_it(packed_checkpoint):
    lm = harness.DiffusionLM(packed_checkpoint, mc_num=16, seed=1)
    (logprob, _), = lm.loglikelihood(requests("loglikelihood", [("the girl had a", " red ball")]))
    context, continuation = lm._pairs("the girl had a", " red ball")
    (nats, _), = likelihood.continuation_bound(lm.checkpoint.model, lm.tokenizer, [(context, continuation)], 32, 16, seed=1)
    assert logprob == pytest.approx(-nats) and logprob < 0
    # Greedy decoding of the one masked position writes the model's most likely token there: that one is greedy.
    rows, _ = likelihood.continuation_rows(lm.tokenizer, [(context, [0])], 32)
    rows[0, 1 + len(context)] = lm.tokenizer.mask_token_id
    logits = lm.checkpoint.model(input_ids=rows).logits[0, 1 + len(context)]
    banned = sorted({lm.tokenizer.mask_token_id, lm.tokenizer.pad_token_id, lm.tokenizer.bos_token_id})
    logits[banned] = -math.inf
    best = int(logits.argmax())
    assert likelihood.greedy_continuation(lm.checkpoint.model, lm.tokenizer, [(context, [best]), (context, [best + 1 if best + 1 not in banned else best + 2])], 32) == [True, False]


def test_rolling_loglikelihood_scores_every_token_of_a_text_longer_than_the_model_once(packed_checkpoint, monkeypatch):
    lm = harness.DiffusionLM(packed_checkpoint, mc_num=4)
    text = " ".join(corpus.generate_corpus(12, seed=7))
    ids = lm._ids(text)
    assert len(ids) > 3 * 31
    scored = []
    real = likelihood.continuation_bound

    def counting(model, tokenizer, pairs, *args, **kwargs):
        scored.extend(token for _, predicted in pairs for token in predicted)
        assert all(1 + len(c) + len(p) <= 32 for c, p in pairs)
        return real(model, tokenizer, pairs, *args, **kwargs)

    monkeypatch.setattr(harness, "continuation_bound", counting)
    (total,) = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(text,)]))
    assert scored == ids and total < 0


def test_generate_until_is_generate_text_cut_at_the_stop_sequence(tiny_checkpoint):
    lm = harness.DiffusionLM(tiny_checkpoint, seed=5, strategy="confidence", steps="6")
    checkpoint = models.load_checkpoint(tiny_checkpoint)
    settings = GenerationSettings(prefix="the girl", num_samples=1, seed=5, strategy="confidence", steps=6, max_length=32)
    full = harness.continuation_text(checkpoint, settings)
    assert full and full == harness.continuation_text(checkpoint, settings)  # the same seed, the same text
    stop = full.strip()[len(full.strip()) // 2]
    (cut,) = lm.generate_until(requests("generate_until", [("the girl", {"until": [stop]})]))
    assert cut == full[: full.index(stop)]
    (whole,) = lm.generate_until(requests("generate_until", [("the girl", {"until": ["never there"]})]))
    assert whole == full
    # generate() itself, as generate.py calls it, writes the prompt and then that text.
    assert generate(checkpoint, settings, progress=False).texts[0].replace(" ", "") == ("the girl" + full).replace(" ", "")


@pytest.mark.parametrize("make, message", [
    (lambda c, g: harness.DiffusionLM(c, mc_num=0), "mc_num 0 must be 1 or more"),
    (lambda c, g: harness.DiffusionLM(g), "not a masked LM .* score a causal LM (the matched GPT-2) with lm-eval's own 'hf' model type"),
    (lambda c, g: harness.DiffusionLM(c, stratgy="random"), "unknown model_args stratgy"),
    (lambda c, g: harness.DiffusionLM.create_from_arg_string("mc_num=4"), "model_args needs checkpoint=PATH"),
])
def test_bad_model_args_are_one_line(tiny_checkpoint, tiny_gpt2_checkpoint, make, message):
    with pytest.raises(SettingsError) as refused:
        make(tiny_checkpoint, tiny_gpt2_checkpoint)
    said = str(refused.value)
    assert "\n" not in said and all(part in said for part in message.split(" .* ")), said


def test_the_model_type_is_registered_with_lm_eval(tiny_checkpoint):
    from lm_eval.api.registry import get_model

    lm = get_model("textdiffusion").create_from_arg_string(f"checkpoint={tiny_checkpoint},mc_num=8,strategy=random")
    assert isinstance(lm, harness.DiffusionLM) and lm.mc_num == 8 and lm.generation == {"strategy": "random"}
