"""The Trainer's collator: variable-rate masking, each example at its own noise level.

It lives in the library (`textdiffusion.masking.collator`), on the package's one forward process; this file keeps
the name the seed project's users know (`from data_collator import DiffusionCollator`).
"""

from textdiffusion.masking.collator import DiffusionCollator  # noqa: F401
