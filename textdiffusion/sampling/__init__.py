"""Sampling: the iterative-unmasking loop and its strategies, token drawing, guidance, prompts, the generation call
and the autoregressive sampler.
"""

from textdiffusion.sampling.autoregressive import (  # noqa: F401
    ARGeneration,
    sample_autoregressive,
)
from textdiffusion.sampling.drawing import (  # noqa: F401
    CONFIDENCE_MEASURES,
    SAMPLING_METHODS,
    certainty,
    draw_tokens,
    entropy,
)
from textdiffusion.sampling.generation import (  # noqa: F401
    MASK_SYMBOL,
    check_block_settings,
    generate,
    Generation,
    render_state,
    synchronize,
    warm_up,
)
from textdiffusion.sampling.guidance import (  # noqa: F401
    guide_nll,
    guided,
    guided_by,
    load_guide,
    product_of_experts,
    step_logits,
)
from textdiffusion.sampling.prompts import (  # noqa: F401
    banned_token_ids,
    build_inputs,
    decode_texts,
)
from textdiffusion.sampling.sampler import (  # noqa: F401
    SamplerConfig,
    SampleResult,
    TrajectoryStep,
    sample,
    stream_result,
)
from textdiffusion.sampling.settings import (  # noqa: F401
    CONFIDENCE_CHOICES,
    GENERATION_DEFAULTS,
    REMASK_CHOICES,
    SAMPLING_CHOICES,
    SCHEDULE_CHOICES,
    STRATEGY_CHOICES,
    GenerationSettings,
    fit_to_positions,
)
from textdiffusion.sampling.strategies import (  # noqa: F401
    AUTO,
    REMASK_SCHEDULES,
    STRATEGIES,
    Decision,
    StepView,
    Strategy,
    anchored_runs,
    auto_strategy,
    ends_after_text,
    entropy_bounded_count,
    loop_masked_share,
    remdm_sigma,
    strategy_for,
    strategy_options,
)
