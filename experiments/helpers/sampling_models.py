"""The model a sampling benchmark times: a checkpoint, or a tiny random model of the from-scratch default
architecture with a BPE tokenizer trained on the built-in stories (or on a text file)."""

from pathlib import Path

from textdiffusion import models, sampling
from textdiffusion.cli import UsageError
from textdiffusion.data import corpus, documents, tokenization


def build(checkpoint: str | None, length: int, vocab_size: int = 1000, vocab_text: str | None = None, device: str | None = None):
    """(model, tokenizer, banned ids, block size or None) on the chosen device."""
    target = models.pick_device(device)
    if checkpoint:
        if not Path(checkpoint).is_dir():
            raise UsageError(f"--checkpoint {checkpoint}: no such directory; leave it out to time a tiny random model")
        checkpoint = models.load_checkpoint(checkpoint, device)
        model, tokenizer, line_by_line = checkpoint.model, checkpoint.tokenizer, checkpoint.line_by_line
        block_size = checkpoint.block_size
        if length > models.max_positions(model):
            raise UsageError(f"--length {length} is more than the model's {models.max_positions(model)} positions")
    else:
        texts = documents.read_documents(vocab_text, line_by_line=True) if vocab_text else corpus.generate_corpus(2000)
        tokenizer = tokenization.train_tokenizer(texts, "bpe", vocab_size)
        model = models.build_model("diffusion", "tiny", tokenizer, length)
        line_by_line, block_size = True, None
    return model.to(target).eval(), tokenizer, sampling.banned_token_ids(tokenizer, allow_end=line_by_line), block_size
