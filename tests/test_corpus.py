import random
import re

import pytest

from textdiffusion.data import corpus


@pytest.mark.parametrize("layout", corpus.LAYOUTS)
def test_every_generated_story_is_valid_and_well_formed(layout):
    stories = corpus.generate_corpus(2000, seed=3, layout=layout)
    assert all(corpus.is_valid_story(s) and corpus.is_well_formed(s) for s in stories)


def test_the_same_seed_gives_the_same_corpus_and_another_seed_another():
    assert corpus.generate_corpus(50, seed=4) == corpus.generate_corpus(50, seed=4)
    assert corpus.generate_corpus(50, seed=4) != corpus.generate_corpus(50, seed=5)


def colour_positions(stories):
    """Word index of the colour's second mention (the one that must agree with the first)."""
    positions = []
    for story in stories:
        words = story.split()
        first = next(i for i, w in enumerate(words) if w in corpus.COLOURS)
        positions.append(next(i for i, w in enumerate(words) if i > first and w in corpus.COLOURS))
    return positions


def test_variable_layout_moves_what_must_agree_and_varies_the_number_of_sentences():
    stories = corpus.generate_corpus(2000, seed=0)
    assert len(set(colour_positions(stories))) >= 10
    assert {s.count(" .") for s in stories} == {2, 3, 4}
    assert len({len(s.split()) for s in stories}) >= 20
    # The fixed layout keeps the agreeing words in one place.
    assert set(colour_positions(corpus.generate_corpus(500, seed=0, layout="fixed"))) == {15}


@pytest.mark.parametrize(
    "story, valid, well_formed",
    [
        ("tom found a big red ball . then tom gave the red ball to anna .", True, True),
        ("tom found a big red ball . then tom gave the blue ball to anna .", False, True),  # colour changed
        ("tom found a red ball . anna was happy . then tom gave the red ball to anna .", False, True),  # middle: wrong person
        ("tom found a red ball . the kite was old . then tom gave the red ball to anna .", False, True),  # middle: wrong object
        ("tom found a red ball . then tom gave the red ball to tom .", False, True),  # the two people must differ
        ("later anna took the red ball from tom .", False, False),  # no opening
        ("tom found a red ball . it was a day . then tom gave the red ball to anna .", False, False),  # a word missing
        # The place is bound where it is first mentioned, in the opening or (optional) in the ending.
        ("tom found a red ball . at the end , tom and anna played with the red ball in the park .", True, True),
        ("in the park , tom saw a red ball . at the end , tom and anna played with the red ball in the park .", True, True),
        ("in the park , tom saw a red ball . at the end , tom and anna played with the red ball in the school .", False, True),
        ("tom found a red ball . it was a sunny day . tom was glad . the ball was old . soon tom sold the red ball to mia .",
         False, False),  # three middles: at most two
    ],
)
def test_checker_is_exact_about_grammar_and_agreement(story, valid, well_formed):
    assert corpus.is_valid_story(story) is valid
    assert corpus.is_well_formed(story) is well_formed


def test_a_model_that_ignores_the_first_sentence_fails_the_checker():
    # Such a model writes a grammatical first sentence and a grammatical rest, each right on its own but drawn
    # independently: splice the opening of one story onto the rest of another.
    stories = corpus.generate_corpus(2000, seed=7)
    rng = random.Random(0)
    spliced = []
    for story in stories:
        other = rng.choice(stories)
        head = re.match(r"^.*? \.", story).group(0)
        spliced.append(head + other[len(re.match(r"^.*? \.", other).group(0)):])
    assert sum(map(corpus.is_well_formed, spliced)) / len(spliced) > 0.97
    assert sum(map(corpus.is_valid_story, spliced)) / len(spliced) < 0.05


@pytest.mark.parametrize(
    "story, slots",
    [
        ("tom found a big red ball . then tom gave the red ball to anna .", set()),
        ("tom found a big red ball . then tom gave the blue ball to anna .", {"C"}),
        ("tom found a red ball . the kite was old . then ben gave the red ball to anna .", {"A", "O"}),
        ("tom found a red ball . then tom gave the red ball to tom .", {"B"}),
        ("in the park , tom saw a red ball . at the end , tom and anna played with the red ball in the school .", {"P"}),
        ("tom found a red ball . it was a day . then tom gave the red ball to anna .", None),
    ],
)
def test_disagreeing_slots_name_the_broken_rule(story, slots):
    assert corpus.disagreeing_slots(story) == slots
