"""Training: the masked-diffusion Trainer, its callbacks, building a run from its settings and saving what it made
(with its model card, pushed to the hub on request).
"""

from textdiffusion.training.build import (  # noqa: F401
    build_trainer,
    load_pretrained,
    run_diffusion_config,
    train_tokenizer_and_build_model,
)
from textdiffusion.training.callbacks import StepTimes, StopOnSignal, TrainingStep  # noqa: F401
from textdiffusion.training.hub import create_hub_repo, push_final_model  # noqa: F401
from textdiffusion.training.model_card import CheckpointCards, write_model_card  # noqa: F401
from textdiffusion.training.plots import plot_loss_by_level  # noqa: F401
from textdiffusion.training.saving import (  # noqa: F401
    FINAL_MODEL,
    plateau_warning,
    save_final_model,
    save_run,
)
from textdiffusion.training.trainer import LEVEL_NAMES, NUM_LEVELS, DiffusionTrainer  # noqa: F401
