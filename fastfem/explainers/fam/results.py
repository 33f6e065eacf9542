"""What FAM's retrieval and episode tasks return."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
    """What `FAM.explain_retrieval` returns (NumPy arrays; ``k`` = top_k, best first).

    Attributes:
      similarities: (Nq, k) float32, ``S(query, neighbour)`` from the pair formula.
      indices: (Nq, k) int64, the neighbours' indices in the gallery.
      maps: the query's FAM for each neighbour, (Nq, k, H, W, 1) float32 ((Nq, k, h, w) with
        ``resize=False``).
      neighbour_maps: the neighbours' FAMs (same weights as the query's map of that pair),
        shaped like ``maps``; None unless requested.
    """

    similarities: np.ndarray
    indices: np.ndarray
    maps: np.ndarray
    neighbour_maps: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """What `FAM.explain_episode` returns (NumPy arrays).

    Attributes:
      classes: (n_way,) the distinct support labels, sorted; class ``j`` below is ``classes[j]``.
      prototypes: (n_way, C) float32, the mean pooled support embedding of each class.
      similarities: (Nq, n_way) float32, ``S(query, prototype)`` (the head applied to both when
        there is one).
      predictions: (Nq,) the predicted labels (values from ``classes``): the most similar
        prototype.
      targets: (Nq,) the labels the maps explain: ``query_labels`` when given, else
        ``predictions``.
      query_maps: (Nq, H, W, 1) float32, FAM of each query against its target prototype.
      support_indices: (Nq, K) int64, indices into the support set of the members of each
        query's target class, -1 where that class has fewer than K members.
      support_maps: (Nq, K, H, W, 1) float32, FAM of each such support image for the pair
        (query, support image), NaN where ``support_indices`` is -1; None unless requested.
    """

    classes: np.ndarray
    prototypes: np.ndarray
    similarities: np.ndarray
    predictions: np.ndarray
    targets: np.ndarray
    query_maps: np.ndarray
    support_indices: np.ndarray
    support_maps: np.ndarray | None = None
