"""Explanation quality metrics: per-sample, vmappable, jittable.

* `fastfem.metrics.localisation`: pointing game, energy-based pointing game, IoU@t (on device),
  largest-connected-component box IoU (host); `box_mask` rasterises xyxy boxes.
* `fastfem.metrics.faithfulness`: average drop, increase in confidence, deletion / insertion
  curves and AUC, with the model's score as a `Scorer` (class score or FAM similarity).
* `fastfem.metrics.baselines`: the uniform reference map (the mean of activations is the
  method `fastfem.explainers.mean_activation.MeanActivation`).

`fastfem.evaluate` runs them all, fused in one jitted step per batch.
"""

from fastfem.metrics.baselines import UniformMap
from fastfem.metrics.faithfulness import (
    Scorer,
    average_drop,
    baseline_image,
    class_scorer,
    curve_auc,
    drop_and_increase,
    increase_in_confidence,
    masked_input,
    perturbation_curves,
    perturbed_input,
    saliency_ranks,
    similarity_scorer,
    step_counts,
)
from fastfem.metrics.localisation import (
    Localisation,
    box_iou,
    box_mask,
    box_masks,
    energy_pointing_game,
    iou_at,
    iou_box,
    iou_box_batch,
    largest_component_box,
    localisation_metrics,
    localisation_sample,
    normalize_map,
    pointing_game,
)

__all__ = [
    "Localisation",
    "Scorer",
    "UniformMap",
    "average_drop",
    "baseline_image",
    "box_iou",
    "box_mask",
    "box_masks",
    "class_scorer",
    "curve_auc",
    "drop_and_increase",
    "energy_pointing_game",
    "increase_in_confidence",
    "iou_at",
    "iou_box",
    "iou_box_batch",
    "largest_component_box",
    "localisation_metrics",
    "localisation_sample",
    "masked_input",
    "normalize_map",
    "perturbation_curves",
    "perturbed_input",
    "pointing_game",
    "saliency_ranks",
    "similarity_scorer",
    "step_counts",
]
