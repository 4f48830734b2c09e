"""Metrics of generated texts: unigram entropy, distinct-n, repetition, and on the built-in corpus the share of
valid (and well-formed) stories."""

import math
from collections import Counter

import torch

import corpus
import models
import sampling
from likelihood import judge_perplexity


def _tokens(text) -> list:
    return text.split() if isinstance(text, str) else list(text)


def unigram_entropy(text) -> float:
    """Entropy (nats) of the token frequencies within one sample (words of a string, or a list of ids)."""
    counts = Counter(_tokens(text))
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0


def mean_unigram_entropy(texts) -> float:
    return sum(unigram_entropy(t) for t in texts) / max(len(texts), 1)


def _ngrams(tokens: list, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts, n: int) -> float:
    """Distinct n-grams over all n-grams of all samples (Li et al. 2016); 0 when there are none."""
    grams = [g for t in texts for g in _ngrams(_tokens(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts, n: int = 3) -> float:
    """Share of n-grams that repeat an n-gram seen earlier in the same sample (pooled over samples).

    Degenerate loops ("the ball the ball the ball") score near 1; text without repeated phrases scores 0.
    """
    repeats = total = 0
    for text in texts:
        grams = _ngrams(_tokens(text), n)
        repeats += len(grams) - len(set(grams))
        total += len(grams)
    return repeats / total if total else 0.0


def story_metrics(texts: list[str], training_stories) -> dict:
    """Built-in corpus only: share of samples that are valid stories, and share valid and not in the training set."""
    seen = {" ".join(s.split()) for s in training_stories}
    valid = [corpus.is_valid_story(t) for t in texts]
    novel = [v and " ".join(t.split()) not in seen for t, v in zip(texts, valid)]
    n = max(len(texts), 1)
    return {"valid_rate": sum(valid) / n, "novel_valid_rate": sum(novel) / n}


def sample_metrics(texts: list[str], judge=None, training_stories=None) -> dict:
    """Metrics of a list of generated texts. `judge` is (causal LM, tokenizer) or None."""
    result = {
        "entropy": mean_unigram_entropy(texts),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "repetition": repetition_rate(texts),
    }
    if judge is not None:
        result["gen_ppl"] = judge_perplexity(*judge, texts).ppl
    if training_stories is not None:
        result.update(story_metrics(texts, training_stories))
    return result


def checkpoint_story_quality(checkpoint: str, num_samples: int = 256, seed: int = 1, threads: int | None = None) -> dict:
    """A checkpoint trained on the built-in corpus, sampled at generate.py's defaults: shares of valid and of
    well-formed stories among `num_samples` documents (one batch), of stories breaking each agreement rule
    (broken_A ... broken_P, see corpus.disagreeing_slots), and the forward passes it took. A GPT-2 baseline
    (train.py --objective ar) is sampled by the shared autoregressive sampler with the same settings."""
    if threads:
        torch.set_num_threads(threads)
    settings = sampling.GenerationSettings(num_samples=num_samples, seed=seed)
    if models.is_causal_lm(checkpoint):
        out = sampling.sample_autoregressive(*models.load_causal_lm(checkpoint), settings)
        nfe = out.forward_passes
    else:
        out = sampling.generate(models.load_checkpoint(checkpoint), settings, progress=False)
        nfe = out.nfe
    broken = [corpus.disagreeing_slots(text) for text in out.texts]
    quality = {
        "valid_rate": sum(b == set() for b in broken) / len(out.texts),
        "well_formed_rate": sum(b is not None for b in broken) / len(out.texts),
        "nfe": nfe,
    }
    # Which long-range rule the well-formed but invalid ones break (shares of all samples).
    for slot in "ABCOP":
        quality[f"broken_{slot}"] = sum(slot in b for b in broken if b) / len(out.texts)
    return quality
