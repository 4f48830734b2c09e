"""The loss per mask level over a run, in training and at evaluation's fixed levels.
"""

from pathlib import Path

from textdiffusion.metrics import tables
from textdiffusion.training.trainer import LEVEL_NAMES


def plot_loss_by_level(log_history: list[dict], path: Path) -> None:
    plt = tables.pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, prefix, title in ((axes[0], "", "training"), (axes[1], "eval_", "evaluation (fixed levels, fixed seed)")):
        for name in LEVEL_NAMES:
            points = [(e["step"], e[f"{prefix}loss_mask_{name}"]) for e in log_history if f"{prefix}loss_mask_{name}" in e]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=f"mask <= {name}")
        ax.set(title=f"Loss per mask level, {title}", xlabel="step", ylabel="cross-entropy of masked tokens")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # a run too short to log has no training points
        axes[0].legend(fontsize=7, ncol=2)
    tables.save_figure(fig, path, layout="tight")
