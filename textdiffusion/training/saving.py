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


def save_run(trainer, out: Path, config: DiffusionConfig, metrics: dict) -> None:
    """OUTPUT_DIR/final-model, metrics.json, trainer_state.json (the whole log history and the final step) and,
    for a diffusion model, loss_by_mask_level.png. Call it on the main process only."""
    save_final_model(trainer, out / FINAL_MODEL, config)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    trainer.save_state()
    if config.objective == "diffusion":
        plot_loss_by_level(trainer.state.log_history, out / "loss_by_mask_level.png")
    logger.info("final model written to %s", out / FINAL_MODEL)
