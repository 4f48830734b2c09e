"""What a finished run leaves in its output directory: the final model (written atomically), its metrics, the
Trainer's log history and the loss-by-level plot.
"""

import json
import logging
import shutil
from pathlib import Path

from textdiffusion.models.diffusion_config import DiffusionConfig
from textdiffusion.training.plots import plot_loss_by_level

logger = logging.getLogger(__name__)

FINAL_MODEL = "final-model"

# A model that uses its context predicts a token with 90% of the text visible far better than with none: loss at
# mask rate 0.1 at most 0.8x that at 1.0 on every corpus where it learned (RESULTS.md, "Defaults on real text").
# At or above this share it is still predicting the corpus's word frequencies.
PLATEAU_RATIO = 0.9


def save_final_model(trainer, directory: Path, config: DiffusionConfig) -> None:
    """Write model, tokenizer and diffusion_config.json elsewhere, then rename: never a half-written model."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))  # safetensors + tokenizer (the Trainer's processing_class)
    config.save(tmp)
    old = directory.with_name(f".{directory.name}.old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def save_run(trainer, out: Path, config: DiffusionConfig, metrics: dict) -> dict:
    """OUTPUT_DIR/final-model, metrics.json, trainer_state.json (the whole log history and the final step) and,
    for a diffusion model, loss_by_mask_level.png; returns the metrics written (with `best_step`, the step
    final-model was saved at). Call it on the main process only."""
    best = trainer.state.best_model_checkpoint
    if best is not None:
        step = Path(best).name.split("-")[-1]
        metrics = {**metrics, "best_step": int(step) if step.isdigit() else step}
        logger.info("final-model is step %s of %d, the lowest held-out loss (%.4f)", step, trainer.state.global_step,
                    trainer.state.best_metric)
    save_final_model(trainer, out / FINAL_MODEL, config)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    trainer.save_state()
    if config.objective == "diffusion":
        plot_loss_by_level(trainer.state.log_history, out / "loss_by_mask_level.png")
    logger.info("final model written to %s", out / FINAL_MODEL)
    return metrics


def plateau_warning(metrics: dict) -> str | None:
    """One line when a diffusion model's held-out loss at mask rate 0.1 is no lower than PLATEAU_RATIO times that at
    1.0: the model ignores the context (it has learned the unigram distribution and no more), and what to try.
    None when it uses the context, or when `metrics` lacks the two levels (the GPT-2 baseline)."""
    low, full = metrics.get("eval_loss_mask_0.1"), metrics.get("eval_loss_mask_1.0")
    if low is None or full is None or not full > 0 or low < PLATEAU_RATIO * full:
        return None
    return (f"the model ignores its context: held-out loss at mask rate 0.1 is {low:.3f}, {low / full:.2f}x the "
            f"{full:.3f} at 1.0 (a model that reads the text around a gap is below {PLATEAU_RATIO}x), so it writes "
            "the corpus's common words in no order; try more --max-steps, more training text or a smaller --learning-rate")

