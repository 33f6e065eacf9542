"""Overlay grid PNG: each image with its map on top (matplotlib, viridis, alpha 0.5 as Xplique)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def normalize_for_display(m: np.ndarray, clip_percentile: float = 0.1) -> np.ndarray:
    """Clip to the [p, 100 - p] percentiles and scale to [0, 1] (Xplique's plot convention)."""
    lo, hi = np.nanpercentile(m, [clip_percentile, 100 - clip_percentile])
    return np.clip((m - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(m)


def save_overlay_grid(
    images: np.ndarray,
    maps: np.ndarray,
    path: str | Path,
    titles: Sequence[str] | None = None,
    max_images: int = 32,
    cols: int = 8,
) -> Path:
    """Write a grid of the first ``max_images`` images with their maps overlaid; returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(images), max_images)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        img = img[..., 0] if img.shape[-1] == 1 else img
        ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None)
        ax.imshow(normalize_for_display(maps[i].squeeze()), cmap="viridis", alpha=0.5)
        if titles is not None:
            ax.set_title(str(titles[i])[:24], fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
