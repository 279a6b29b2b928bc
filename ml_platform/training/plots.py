"""Figures saved beside an evaluation (PNG), for MLflow's artifact view and Dagster's metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_calibration(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """A reliability diagram: observed positive share against mean predicted probability per bin."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axes.plot(
        [r["mean_probability"] for r in rows],
        [r["positive_share"] for r in rows],
        marker="o",
        label="model",
    )
    axes.set(xlabel="mean predicted probability", ylabel="observed positive share", xlim=(0, 1), ylim=(0, 1))
    axes.set_title(title)
    axes.legend(loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
