"""Metrics of generated texts: unigram entropy, distinct-n, repetition, and on the built-in corpus the share of
valid (and well-formed) stories."""

import functools
import math
from collections import Counter

import torch

from textdiffusion.data import corpus
from textdiffusion.errors import SettingsError
from textdiffusion.metrics.likelihood import judge_perplexity
from textdiffusion.models.checkpoint import (
    is_causal_lm,
    load_causal_lm,
    load_checkpoint,
)
from textdiffusion.sampling.autoregressive import sample_autoregressive
from textdiffusion.sampling.generation import generate
from textdiffusion.sampling.settings import GenerationSettings


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


def valid_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share of `k` successes in `n` trials (z = 1.96: 95%), e.g. valid stories
    among samples. Unlike p +- z * sqrt(p (1 - p) / n) it stays inside [0, 1] and is not empty at k = 0 or k = n
    (Wilson 1927; Newcombe 1998, method 3). n = 0: (0, 1), nothing is known."""
    if n < 0 or not 0 <= k <= n:
        raise SettingsError(f"valid_interval({k}, {n}): needs 0 <= k <= n")
    if z <= 0:
        raise SettingsError(f"valid_interval z {z}: must be > 0 (1.96 for 95%)")
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def story_metrics(texts: list[str], training_stories) -> dict:
    """Built-in corpus only: share of samples that are valid stories (with its 95% Wilson interval, valid_low and
    valid_high), and share valid and not in the training set."""
    seen = {" ".join(s.split()) for s in training_stories}
    valid = [corpus.is_valid_story(t) for t in texts]
    novel = [v and " ".join(t.split()) not in seen for t, v in zip(texts, valid)]
    n = max(len(texts), 1)
    low, high = valid_interval(sum(valid), len(texts))
    return {"valid_rate": sum(valid) / n, "valid_low": low, "valid_high": high, "novel_valid_rate": sum(novel) / n,
            "num_samples": len(texts)}


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


def sentence_count(text: str) -> int:
    """Sentences of a built-in story (each ends with a full stop, written ' .')."""
    return text.split().count(".")


def sentence_mix(texts) -> dict[int, float]:
    """Share of texts with each number of sentences."""
    counts = Counter(sentence_count(t) for t in texts)
    return {k: counts[k] / max(len(texts), 1) for k in sorted(counts)}


@functools.cache
def reference_stories() -> tuple[str, ...]:
    """2000 stories of the built-in corpus (its own seed, not the training one): the mix samples are compared with."""
    return tuple(corpus.generate_corpus(2000, seed=12345))


def _total_variation(mine: Counter, theirs: Counter) -> float:
    """Total variation distance between the distributions that two counts describe (0 = the same, 1 = disjoint)."""
    n, m = max(sum(mine.values()), 1), max(sum(theirs.values()), 1)
    return min(1.0, 0.5 * sum(abs(mine[k] / n - theirs[k] / m) for k in mine.keys() | theirs.keys()))  # 1 + rounding


def shape_distance(texts, reference) -> float:
    """Total variation distance between the sentence-count mix of `texts` and of `reference` (0 = the same mix,
    1 = no count in common). The built-in corpus has two, three and four sentences, about a third each; a sampler
    that only ever writes the shortest stories scores about 0.67 however valid they are."""
    return _total_variation(Counter(map(sentence_count, texts)), Counter(map(sentence_count, reference)))


def opening_distance(texts, reference) -> float:
    """Total variation distance between the mixes of first two words ("the day", "in the", "there was" ...) of
    `texts` and of `reference`: how far the openings a sampler writes are from the corpus's variety."""
    def opening(text):
        return " ".join(text.split()[:2])

    return _total_variation(Counter(map(opening, texts)), Counter(map(opening, reference)))


def _story_quality(texts: list[str], reference: list[str]) -> dict:
    broken = [corpus.disagreeing_slots(text) for text in texts]
    n = max(len(texts), 1)
    quality = {
        "valid_rate": sum(b == set() for b in broken) / n,
        "well_formed_rate": sum(b is not None for b in broken) / n,
        "shape_distance": shape_distance(texts, reference),
        "opening_distance": opening_distance(texts, reference),
        "mean_words": sum(len(t.split()) for t in texts) / n,
    }
    # Which long-range rule the well-formed but invalid ones break (shares of all samples).
    for slot in "ABCOP":
        quality[f"broken_{slot}"] = sum(slot in b for b in broken if b) / n
    return quality


def checkpoint_story_quality(checkpoint: str, num_samples: int = 256, seed: int = 1, threads: int | None = None, max_length: int | None = None) -> dict:
    """A checkpoint trained on the built-in corpus, sampled at generate.py's defaults: shares of valid and of
    well-formed stories among `num_samples` documents (one batch), of stories breaking each agreement rule
    (broken_A ... broken_P, see corpus.disagreeing_slots), how far their sentence-count mix is from the corpus's
    (shape_distance) and their openings' mix (opening_distance), their mean length in words and the forward passes
    it took.

    The same measures prefixed `ancestral_` come from the model's own distribution: a diffusion model decoded one
    random position per pass (`--strategy random --steps L`, every token drawn from the model's conditional given
    all drawn before, in a random order), a GPT-2 baseline (train.py --objective ar) by the shared autoregressive
    sampler, which is ancestral already. Confidence-ordered decoding (the default) can score high on validity by
    writing only the model's likeliest story shapes; shape_distance shows when it does. `max_length`: tokens per
    sample, default generate.py's.
    """
    if threads:
        torch.set_num_threads(threads)
    settings = GenerationSettings(num_samples=num_samples, seed=seed)
    settings.max_length = max_length or settings.max_length
    reference = reference_stories()
    if is_causal_lm(checkpoint):
        out = sample_autoregressive(*load_causal_lm(checkpoint), settings)
        quality = _story_quality(out.texts, reference)
        return {**quality, "nfe": out.forward_passes, **{f"ancestral_{k}": v for k, v in quality.items()}}
    model = load_checkpoint(checkpoint)
    out = generate(model, settings, progress=False)
    settings.strategy, settings.steps = "random", settings.max_length
    ancestral = generate(model, settings, progress=False)
    return {**_story_quality(out.texts, reference), "nfe": out.nfe,
            **{f"ancestral_{k}": v for k, v in _story_quality(ancestral.texts, reference).items()}}
