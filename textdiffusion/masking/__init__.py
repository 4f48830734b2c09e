"""The forward process: schedules, masking units at a time t, the training collator and the loss.
"""

from textdiffusion.masking.forward import (  # noqa: F401
    PREFIX_POLICIES,
    ForwardProcess,
    MaskedUnits,
    cycled_times,
)
from textdiffusion.masking.loss import (  # noqa: F401
    LOSS_WEIGHTINGS,
    diffusion_loss,
    masked_diffusion_loss,
)
from textdiffusion.masking.schedules import (  # noqa: F401
    SCHEDULES,
    bound_weight,
    elbo_weight,
    mask_fraction,
)
