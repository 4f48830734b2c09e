"""text_metrics.py: entropy, distinct-n, repetition and story validity of generated texts."""

import math

import pytest

from textdiffusion.data import corpus
from textdiffusion.errors import SettingsError
from textdiffusion.metrics import text_metrics


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
    low, high = text_metrics.valid_interval(2, 3)
    assert result == {"valid_rate": pytest.approx(2 / 3), "valid_low": low, "valid_high": high,
                      "novel_valid_rate": pytest.approx(1 / 3), "num_samples": 3}


@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson).
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_valid_interval_is_the_wilson_score_interval(k, n, low, high):
    assert text_metrics.valid_interval(k, n) == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_valid_interval_of_all_valid_reaches_one_and_of_no_samples_is_everything():
    low, high = text_metrics.valid_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(1 - 0.1611, abs=5e-5)  # the mirror of 0/20
    assert text_metrics.valid_interval(0, 0) == (0.0, 1.0)
    wide, narrow = text_metrics.valid_interval(50, 100, z=2.576), text_metrics.valid_interval(50, 100)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]  # 99% is wider than 95%


@pytest.mark.parametrize("k, n", [(5, 4), (-1, 4), (0, -1)])
def test_valid_interval_refuses_counts_outside_zero_to_n(k, n):
    with pytest.raises(SettingsError, match=rf"valid_interval\({k}, {n}\)"):
        text_metrics.valid_interval(k, n)


def test_shape_distance_is_the_total_variation_between_sentence_count_mixes():
    two = "tom found a red ball . then tom gave the red ball to mia ."
    three = "tom found a red ball . tom was glad . then tom gave the red ball to mia ."
    assert text_metrics.sentence_count(three) == 3
    assert text_metrics.sentence_mix([two, two, three, three]) == {2: 0.5, 3: 0.5}
    assert text_metrics.shape_distance([two, three], [two, three]) == 0.0
    assert text_metrics.shape_distance([two] * 4, [three] * 4) == 1.0
    assert text_metrics.shape_distance([two] * 4, [two, three]) == pytest.approx(0.5)
    reference = corpus.generate_corpus(2000, seed=12345)
    assert text_metrics.shape_distance(corpus.generate_corpus(500, seed=3), reference) < 0.08  # the corpus is near itself
    assert text_metrics.shape_distance([s for s in reference if text_metrics.sentence_count(s) == 2], reference) > 0.6


def test_opening_distance_compares_the_first_two_words():
    a, b = "the day tom found a ball .", "in the park , tom saw a ball ."
    assert text_metrics.opening_distance([a, b], [b, a]) == 0.0
    assert text_metrics.opening_distance([a, a], [b, b]) == 1.0
    assert text_metrics.opening_distance([a, a], [a, b]) == pytest.approx(0.5)


def test_story_quality_reports_defaults_and_the_models_own_distribution(tiny_checkpoint):
    quality = text_metrics.checkpoint_story_quality(tiny_checkpoint, num_samples=4, max_length=24)
    for prefix in ("", "ancestral_"):
        assert 0 <= quality[prefix + "valid_rate"] <= quality[prefix + "well_formed_rate"] <= 1
        assert 0 <= quality[prefix + "shape_distance"] <= 1 and quality[prefix + "mean_words"] > 0
        assert 0 <= quality[prefix + "opening_distance"] <= 1
    assert quality["nfe"] >= 1


# ----------------------------------------------------------------------------- evaluate.py


