"""Shared fixtures: a tokenizer trained on the built-in corpus and tiny models built from a config."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import corpus  # noqa: E402
import loading  # noqa: E402


@pytest.fixture(scope="session")
def story_tokenizer():
    return loading.train_tokenizer(corpus.generate_corpus(300), "bpe", 500)


@pytest.fixture(scope="session")
def tiny_mlm(story_tokenizer):
    model = loading.build_model("diffusion", "tiny", story_tokenizer, 48)
    return model.eval()
