"""The evaluation's settings: metric names, `MetricsConfig`, and which metrics a call computes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from fastfem.explainers.base import check_positive_int
from fastfem.metrics import faithfulness as F
from fastfem.metrics import localisation as Loc

LOCALISATION_METRICS: tuple[str, ...] = ("pointing_game", "energy_pointing_game", "iou", "iou_box")
FAITHFULNESS_METRICS: tuple[str, ...] = (
    "average_drop",
    "increase_in_confidence",
    "deletion_auc",
    "insertion_auc",
)
METRICS: tuple[str, ...] = LOCALISATION_METRICS + FAITHFULNESS_METRICS


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    """The evaluation's settings, validated once and passed through (hashable).

    Attributes:
      threshold: t of IoU@t and of the component box, in [0, 1].
      normalize, ties: map normalisation and pointing-game tie rule
        (`fastfem.metrics.localisation`).
      steps, baseline: T and the baseline (a number or ``"mean"``) of deletion/insertion.
      activation: None, ``"softmax"`` or ``"sigmoid"`` on the model output (class scorer).
      max_images: images per forward pass in the curves.
    """

    threshold: float = 0.5
    normalize: Loc.Normalize = "relu_minmax"
    ties: Loc.Ties = "mean"
    steps: int = 16
    baseline: F.Baseline = 0.0
    activation: F.Activation = None
    max_images: int = 256

    def __post_init__(self) -> None:
        Loc.check_normalize(self.normalize)
        if self.ties not in Loc.TIES:
            raise ValueError(f"unknown ties rule {self.ties!r}; expected one of {Loc.TIES}")
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= float(self.threshold) <= 1.0):
            raise ValueError(f"threshold must be a number in [0, 1]; got {self.threshold!r}")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.max_images, "max_images")
        if isinstance(self.baseline, str) and self.baseline != "mean":
            raise ValueError(f"baseline must be a number or 'mean'; got {self.baseline!r}")
        if self.activation not in (None, "softmax", "sigmoid"):
            raise ValueError(
                f"activation must be None, 'softmax' or 'sigmoid'; got {self.activation!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        """The settings for reports (JSON-ready)."""
        return dataclasses.asdict(self)


def resolve_metrics(
    metrics: Sequence[str] | str | None, has_boxes: bool, can_score: bool
) -> tuple[str, ...]:
    """Validate metric names; None -> every metric that the given data allows."""
    if metrics is None:
        chosen = (LOCALISATION_METRICS if has_boxes else ()) + (
            FAITHFULNESS_METRICS if can_score else ()
        )
        if not chosen:
            raise ValueError(
                "nothing to evaluate: give boxes= for the localisation metrics and/or a model "
                "(model= or explainer.model) for the faithfulness metrics"
            )
        return chosen
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected names from {METRICS}")
    if not has_boxes and any(m in LOCALISATION_METRICS for m in metrics):
        raise ValueError(f"localisation metrics {LOCALISATION_METRICS} need boxes=")
    return tuple(dict.fromkeys(metrics))
