"""Prompt words the model never saw in training get a one-line warning; a prompt of nothing it knows, one line and
exit 2; a whitespace-only prompt is no prompt, said so."""

import logging
import shutil
from collections import Counter

import pytest

import generate
from textdiffusion import cli
from textdiffusion.data import corpus, tokenization
from textdiffusion.errors import SettingsError
from textdiffusion.sampling import prompts

WARNING = "prompt words the model rarely or never saw in training"


@pytest.fixture(autouse=True)
def _every_warning_afresh():
    prompts._warn_once.cache_clear()  # each warning is said once per process; each test wants its own


@pytest.fixture(scope="module")
def counted_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with the piece counts of the text its tokenizer was trained on (conftest's 300 stories)."""
    directory = tmp_path_factory.mktemp("counted") / "final-model"
    shutil.copytree(tiny_checkpoint, directory)
    tokenizer = tokenization.load_tokenizer(str(directory))
    tokenization.save_piece_counts(tokenizer, corpus.generate_corpus(300), directory)
    return str(directory)


def _generate(checkpoint, prefix, caplog, *extra) -> tuple[list[str], list[str]]:
    """(texts, warning lines) of generate.py with `prefix`."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        texts = generate.main(["--checkpoint", checkpoint, "--prefix", prefix, "--max-length", "16", "--steps", "4",
                               "--num-samples", "2", "--hide-steps", *extra])
    return texts, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_capitalised_prompt_on_a_lower_case_checkpoint_warns_in_one_line(tiny_checkpoint, caplog):
    _, warnings = _generate(tiny_checkpoint, "Tom found", caplog)
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0] == f"{WARNING}, so the text may not follow them: 'Tom' (2 pieces where 'tom' is 1: a case the training text lacks)"


def test_a_prompt_in_the_training_texts_words_does_not_warn(tiny_checkpoint, counted_checkpoint, caplog):
    for checkpoint in (tiny_checkpoint, counted_checkpoint):
        texts, warnings = _generate(checkpoint, "there was a red box in the garden", caplog)
        assert warnings == [] and all(text.startswith("there was a red box in the garden") for text in texts)


def test_a_word_split_into_single_characters_is_named(tiny_checkpoint, caplog):
    _, warnings = _generate(tiny_checkpoint, "the dragon ate xylophones", caplog, "--max-length", "32")
    assert len(warnings) == 1
    assert "'dragon' (5 pieces, mostly single characters" in warnings[0] and "'xylophones' (10 pieces" in warnings[0]
    assert "'the'" not in warnings[0] and "'ate'" not in warnings[0]  # ' at' 'e': two pieces, not a broken word


def test_with_piece_counts_a_word_whose_pieces_training_never_used_is_named(counted_checkpoint, caplog):
    _, warnings = _generate(counted_checkpoint, "there was a cat", caplog)
    # "cat" is no word of the corpus: ' c' and 'at' exist only as steps of the tokenizer's merges.
    assert warnings == [f"{WARNING}, so the text may not follow them: 'cat' (pieces ' c' 'at' never in the training text)"]
    # A story seldom starts with "tom" (the start of a document is a piece of its own, without the space).
    _, warnings = _generate(counted_checkpoint, "tom found", caplog)
    assert warnings == [f"{WARNING}, so the text may not follow them: 'tom' (piece 'tom' only 2x in the training text)"]


def test_a_prompt_of_only_pieces_training_never_used_is_one_warning_and_still_generates(counted_checkpoint, caplog):
    texts, warnings = _generate(counted_checkpoint, "日本", caplog)
    assert warnings == ["prompt '日本': no piece of it occurs in the model's training text, so the text will not follow "
                        "it; write it in words of that text (a lower-case corpus wants lower case)"]
    assert len(texts) == 2 and all(text.startswith("日本") for text in texts)


def test_a_word_level_tokenizer_names_unknown_words_and_refuses_a_prompt_of_nothing_else():
    tokenizer = tokenization.train_tokenizer(corpus.generate_corpus(100), "word", 200)
    assert prompts.unfamiliar_words(tokenizer, "Tom found the zebra") == {"Tom": "unknown to the tokenizer",
                                                                           "zebra": "unknown to the tokenizer"}
    assert prompts.prompt_warning(tokenizer, "tom found") is None
    with pytest.raises(SettingsError, match="prompt 'Zed Xu': every piece of it is unknown to the model's tokenizer"):
        prompts.prompt_warning(tokenizer, "Zed Xu")


def test_a_whitespace_only_prefix_is_no_prompt_and_says_so(tiny_checkpoint, caplog):
    texts, warnings = _generate(tiny_checkpoint, "   ", caplog)
    assert warnings == ["prefix '   ' is only whitespace: generating without a prompt (unconditionally)"]
    assert texts == generate.main(["--checkpoint", tiny_checkpoint, "--max-length", "16", "--steps", "4", "--num-samples", "2",
                                   "--hide-steps"])


def test_saved_piece_counts_are_the_training_texts_and_found_beside_a_final_model(story_tokenizer, tmp_path):
    texts = ["tom found a red ball .", "mia lost a red kite .", "tom found mia ."]
    tokenization.save_piece_counts(story_tokenizer, texts, tmp_path / "tokenizer")
    expected = Counter(p for text in texts for p in story_tokenizer.tokenize(text))
    story_tokenizer.save_pretrained(tmp_path / "final-model")
    loaded = tokenization.load_piece_counts(tokenization.load_tokenizer(str(tmp_path / "final-model")))
    assert loaded == dict(expected) and loaded["Ġred"] == 2
    assert tokenization.load_piece_counts(story_tokenizer) is None  # trained in memory: nothing saved
