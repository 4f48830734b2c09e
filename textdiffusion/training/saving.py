"""What a finished run leaves in its output directory: the final model (written atomically, with its model card),
its metrics, the Trainer's log history and the loss-by-level plot.
"""

import json
import logging
import shutil
from pathlib import Path

from textdiffusion.errors import SettingsError
from textdiffusion.models import lora
from textdiffusion.models.diffusion_config import DiffusionConfig
from textdiffusion.training.model_card import finish_model_folder, read_run_args
from textdiffusion.training.plots import plot_loss_by_level

logger = logging.getLogger(__name__)

FINAL_MODEL = "final-model"

# A model that uses its context predicts a token with 90% of the text visible far better than with none: loss at
# mask rate 0.1 at most 0.8x that at 1.0 on every corpus where it learned (RESULTS.md, "Defaults on real text").
# At or above this share it is still predicting the corpus's word frequencies.
PLATEAU_RATIO = 0.9


def save_final_model(trainer, directory: Path, config: DiffusionConfig, metrics: dict | None = None,
                     hub_model_id: str | None = None, adapted=None) -> None:
    """Write model, tokenizer, diffusion_config.json and the model card (README.md, with `metrics`) elsewhere, then
    rename: never a half-written model. A folder that cannot be written is a SettingsError naming it."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if adapted is None:
            trainer.save_model(str(tmp))  # safetensors + tokenizer (the Trainer's processing_class)
        else:  # LoRA (`adapted`: models.lora.add_adapters' PeftModel): the merged model, and its adapter in adapter/
            lora.save_merged(adapted, tmp)
            trainer.processing_class.save_pretrained(tmp)
        config.save(tmp)
        finish_model_folder(tmp, config, metrics, read_run_args(directory.parent), trainer.model, str(directory), hub_model_id)
    except (OSError, SettingsError) as err:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written model left behind
        if isinstance(err, SettingsError):
            raise
        raise SettingsError(f"cannot write {directory}: {err.strerror or err}") from None
    old = directory.with_name(f".{directory.name}.old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def save_run(trainer, out: Path, config: DiffusionConfig, metrics: dict, hub_model_id: str | None = None,
             adapted=None) -> dict:
    """OUTPUT_DIR/final-model, metrics.json, trainer_state.json (the whole log history and the final step) and,
    for a diffusion model, loss_by_mask_level.png; returns the metrics written (with `best_step`, the step
    final-model was saved at). Call it on the main process only."""
    best = trainer.state.best_model_checkpoint
    if best is not None:
        step = Path(best).name.split("-")[-1]
        metrics = {**metrics, "best_step": int(step) if step.isdigit() else step}
        logger.info("final-model is step %s of %d, the lowest held-out loss (%.4f)", step, trainer.state.global_step,
                    trainer.state.best_metric)
    save_final_model(trainer, out / FINAL_MODEL, config, metrics, hub_model_id, adapted)
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

