"""Models and checkpoints: built from a config, loaded from a checkpoint, and their LM heads.
"""

from textdiffusion.models.build import (  # noqa: F401
    ARCHITECTURES,
    MODEL_SIZES,
    ROBERTA_CLASSES,
    build_model,
)
from textdiffusion.models.checkpoint import (  # noqa: F401
    DIFFUSION_CONFIG,
    Checkpoint,
    check_device,
    check_vocab_fits,
    is_causal_lm,
    load_causal_lm,
    load_checkpoint,
    load_masked_lm,
    pick_device,
)
from textdiffusion.models.diffusion_config import (  # noqa: F401
    DiffusionConfig,
)
from textdiffusion.models.heads import (  # noqa: F401
    PADDING_OFFSET_POSITIONS,
    masked_logits,
    max_positions,
    prediction_head,
)
