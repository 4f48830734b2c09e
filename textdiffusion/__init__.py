"""textdiffusion: masked-diffusion language models on top of Hugging Face masked LMs.

The public API is small; everything else lives in the sub-packages (data, masking, models, blocks, sampling,
metrics, rendering, training); a checkpoint's `diffusion_config.json` is a typed `DiffusionConfig`::

    import textdiffusion

    checkpoint = textdiffusion.load_checkpoint("results/final-model")
    out = textdiffusion.generate(checkpoint, textdiffusion.GenerationSettings(prefix="tom found", num_samples=4))
    print(out.texts)           # the texts; out.trajectory holds every step, out.nfe the forward passes
    bound = textdiffusion.elbo_bound(checkpoint.model, checkpoint.tokenizer, rows)   # an upper bound on NLL

Errors from bad values are `textdiffusion.SettingsError` (a ValueError) whose message names the value.
"""

from textdiffusion.errors import SettingsError
from textdiffusion.metrics.likelihood import Perplexity, elbo_bound
from textdiffusion.models.checkpoint import Checkpoint, load_checkpoint
from textdiffusion.models.diffusion_config import DiffusionConfig
from textdiffusion.sampling.generation import Generation, generate
from textdiffusion.sampling.settings import GenerationSettings

__all__ = ["Checkpoint", "DiffusionConfig", "Generation", "GenerationSettings", "Perplexity", "SettingsError", "elbo_bound", "generate",
           "load_checkpoint"]
