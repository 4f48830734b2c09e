"""One evaluation of a diffusion model (and optionally its matched GPT-2): held-out perplexity (bound vs exact),
sample metrics and speed, one row per model plus the reference text. evaluate.py is its command line."""

import logging
from dataclasses import replace
from pathlib import Path

import torch

from textdiffusion.data import corpus, documents, tokenization
from textdiffusion.data.tokenization import same_tokenizer
from textdiffusion.errors import SettingsError
from textdiffusion.metrics import mauve_score, text_metrics
from textdiffusion.metrics.likelihood import as_rows, causal_perplexity, elbo_bound
from textdiffusion.models.checkpoint import Checkpoint
from textdiffusion.models.heads import max_positions
from textdiffusion.sampling.autoregressive import sample_autoregressive
from textdiffusion.sampling.generation import generate
from textdiffusion.sampling.prompts import generated_text_tokens, text_token_count
from textdiffusion.sampling.settings import GenerationSettings

logger = logging.getLogger(__name__)


def evaluation_rows(tokenizer, docs: list[str], max_length: int, line_by_line: bool):
    """The blocks training used for these documents (same tokenizer, layout and length)."""
    return as_rows(tokenization.tokenize_documents(tokenizer, docs, max_length, line_by_line, "tokenize evaluation text"))


def held_out_texts(tokenizer, text_file, max_length: int, count: int) -> list[str]:
    """The first `count` packed blocks of a held-out text file, decoded: what a model's samples are compared with."""
    docs = documents.read_documents(str(text_file), line_by_line=False)
    return [tokenizer.decode(block, skip_special_tokens=True) for block in evaluation_rows(tokenizer, docs, max_length, False)[:count].tolist()]


def report(
    checkpoint: Checkpoint,
    ar=None,
    texts_or_file: list[str] | str | None = None,
    *,
    max_length: int | None = None,
    line_by_line: bool | None = None,
    num_t_samples: int = 8,
    max_documents: int | None = 500,
    settings: GenerationSettings | None = None,
    judge=None,
    training_stories=None,
    seed: int = 0,
    batch_size: int = 64,
) -> list[dict]:
    """Held-out perplexity (bound vs exact), sample metrics, speed: one row per model plus the reference text.

    `checkpoint` is the diffusion model (models.load_checkpoint); the layout, block length and schedule of the
    bound default to how it was trained (`line_by_line`, `max_length` override them). `ar` is (causal LM,
    tokenizer) or None. `texts_or_file`: documents, a .txt/.jsonl path, or None for the built-in corpus's
    validation stories. `settings` (GenerationSettings) draws samples from both models with the same
    settings (None: no samples). `judge` is (causal LM, tokenizer), by default the AR model. `training_stories`
    turns on the built-in corpus's validity/novelty rates (on by default there).
    """
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    line_by_line = checkpoint.line_by_line if line_by_line is None else line_by_line
    max_length = max_length or checkpoint.max_length
    schedule = checkpoint.diffusion_config.schedule
    docs = load_evaluation_documents(texts_or_file, line_by_line, max_documents)
    if texts_or_file is None and training_stories is None:
        training_stories = corpus.generate_corpus(documents.BUILTIN_TRAIN_STORIES, seed=0)
    if max_length > max_positions(model):
        raise SettingsError(f"max_length {max_length} is more than the masked LM's {max_positions(model)} positions")
    if checkpoint.block_size and max_length % checkpoint.block_size:
        raise SettingsError(f"max_length {max_length} must be a multiple of the checkpoint's block size {checkpoint.block_size}")
    ar_model, ar_tokenizer = ar if ar is not None else (None, None)
    judge = judge if judge is not None else ar

    rows = evaluation_rows(tokenizer, docs, max_length, line_by_line)
    logger.info("ELBO bound on %d blocks of %d tokens, %d times each", len(rows), max_length, num_t_samples)
    with checkpoint.forward_context():  # the bound in the precision the model samples in (load_checkpoint's dtype)
        bound = elbo_bound(model, tokenizer, rows, schedule, line_by_line, num_t_samples, seed, batch_size,
                           block_size=checkpoint.block_size)
    diff_row = {"model": "diffusion", **bound.as_dict()}
    table = [diff_row]
    if ar_model is not None:
        matched = same_tokenizer(tokenizer, ar_tokenizer)
        if not matched:
            logger.warning("the tokenizers differ: the text is retokenised; compare bits per byte, not per token")
        ar_rows = rows if matched else evaluation_rows(ar_tokenizer, docs, max_length, line_by_line)
        with checkpoint.forward_context():  # both models in the same precision
            ar_row = {"model": "autoregressive", **causal_perplexity(ar_model, ar_tokenizer, ar_rows, batch_size, line_by_line).as_dict()}
        diff_row["same_tokens"] = ar_row["same_tokens"] = matched
        table.append(ar_row)

    if settings is not None:
        logger.info("sampling %d texts of %d tokens from each model", settings.num_samples, settings.max_length)
        if line_by_line != checkpoint.line_by_line:
            checkpoint = replace(checkpoint, diffusion_config=replace(checkpoint.diffusion_config, line_by_line=line_by_line))
        diff = generate(checkpoint, settings, progress=False)
        diff_tokens = sum(generated_text_tokens(tokenizer, diff.ids, diff.result.fixed, line_by_line))
        diff_row.update(speed(diff, diff_tokens), **text_metrics.sample_metrics(diff.texts, judge, training_stories), samples=diff.texts)
        if ar_model is not None:
            with checkpoint.forward_context():
                ar_out = sample_autoregressive(ar_model, ar_tokenizer, diff.settings)
            ar_tokens = sum(text_token_count(ar_tokenizer, row) for row in ar_out.generated)
            ar_row.update(speed(ar_out, ar_tokens), **text_metrics.sample_metrics(ar_out.texts, judge, training_stories), samples=ar_out.texts)
        # Packed text: held-out blocks as long as the samples (a whole document's word entropy is not comparable
        # with a 64-token sample's); line by line: whole documents, as the samples are.
        reference = docs[: settings.num_samples] if line_by_line else [
            tokenizer.decode(row, skip_special_tokens=True) for row in rows[: settings.num_samples].tolist()]
        table.append({"model": "reference text", **text_metrics.sample_metrics(reference, judge, training_stories)})
        add_mauve(table, judge, reference)
    return table


def add_mauve(table: list[dict], judge, reference: list[str]) -> None:
    """Each sampled row's MAUVE against the reference text, on the judge's features (mauve_score): nothing without
    a judge or without mauve-text installed (said once)."""
    if judge is None:
        return
    if not mauve_score.available():
        logger.info("MAUVE left out: pip install -e '.[eval]' installs mauve-text")
        return
    model, judge_tokenizer = judge
    with torch.no_grad():
        reference_features = mauve_score.text_features(model, judge_tokenizer, reference)
        for row in table:
            if row.get("samples") and len(row["samples"]) > 1 and len(reference) > 1:
                row["mauve"] = mauve_score.mauve_score(mauve_score.text_features(model, judge_tokenizer, row["samples"]), reference_features)


def load_evaluation_documents(texts_or_file, line_by_line: bool, max_documents: int | None = None) -> list[str]:
    """Documents from a list, a .txt/.jsonl file, or (None) the built-in corpus's validation stories."""
    if texts_or_file is None:
        return corpus.generate_corpus(max_documents or 500, seed=documents.BUILTIN_EVAL_SEED)
    if isinstance(texts_or_file, (str, Path)):
        docs = documents.read_documents(str(texts_or_file), line_by_line)
    else:
        docs = [d.strip() for d in texts_or_file if d.strip()]
        if not docs:
            raise SettingsError("the evaluation text is empty")
    return docs[:max_documents] if max_documents else docs


def speed(out, text_tokens: int) -> dict:
    """Seconds, forward passes and text tokens per second of a Generation or ARGeneration; `text_tokens`: the
    tokens of its texts, end tokens not counted (sampling.prompts.text_token_count), the same for both models."""
    passes = out.nfe if hasattr(out, "nfe") else out.forward_passes
    return {"seconds": out.seconds, "forward_passes": passes, "tokens_per_s": text_tokens / max(out.seconds, 1e-9)}
