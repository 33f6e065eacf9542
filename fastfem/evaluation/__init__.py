"""`evaluate`: explanation quality of any explainer on a set of images, metrics fused on device.

``evaluate(explainer, images, boxes=None, targets=None, metrics=None)`` gets the maps
(``explainer.explain``; or, for an explainer whose ``step`` can run on the scoring model's
extractor — `fastfem.FEM`, `fastfem.MLFEM`, the mean-of-activations baseline — from the same
forward pass that gives the base scores), then runs a few jitted,
sharded stages per batch whose intermediates never leave the devices: normalise the maps,
rasterise the boxes, localisation metrics, the model on ``x * L`` (average drop, increase in
confidence), the deletion/insertion curves (chunked forward passes); only per-sample numbers
are fetched. The largest-connected-component box IoU runs on the host (SciPy) from the maps.
Definitions: `fastfem.metrics.localisation` and `fastfem.metrics.faithfulness`.

Scores:

* classifiers: ``targets`` are class indices (or one-hot rows); default the class predicted on
  the clean image. The model comes from ``model=`` (a Keras model, a path, or a
  `FeatureExtractor` built with ``include_output=True``), else from ``explainer.model``.
* similarity explainers (FAM): recognised by duck typing, an explainer with a string attribute
  ``similarity`` and a single-layer ``extractor`` (plus optional ``pooling``, default ``gap``,
  and ``head_function()``, its head as a JAX function). ``targets`` are then the reference
  images, the maps come from ``explainer.explain(images, targets)``, and the score is the
  similarity of the (masked or perturbed) query to its reference at the explained layer.
* anything else: pass ``scorer=`` (a `fastfem.metrics.Scorer`).

Modules: `fastfem.evaluation.config` (metric names, `MetricsConfig`),
`fastfem.evaluation.scoring` (the scorer, the fused explanation), `fastfem.evaluation.stages`
(the per-batch stages), `fastfem.evaluation.evaluator` (`Evaluator`, `evaluate`).
"""

from fastfem.evaluation.config import (
    FAITHFULNESS_METRICS,
    LOCALISATION_METRICS,
    METRICS,
    MetricsConfig,
)
from fastfem.evaluation.evaluator import EvaluationResult, Evaluator, evaluate

__all__ = [
    "FAITHFULNESS_METRICS",
    "LOCALISATION_METRICS",
    "METRICS",
    "EvaluationResult",
    "Evaluator",
    "MetricsConfig",
    "evaluate",
]
