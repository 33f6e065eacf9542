"""What a method is to the rest of fastfem: a `Method` record and the `Explainer` protocol.

A method module (``fem.py``, ``mlfem.py``, ``fam/``, ``mean_activation.py``) defines its
explainer class and ONE `Method` value; `fastfem.explainers.registry` lists them. Callers (the
CLI, the audit, the evaluation) read what they need from the record and the protocol, never the
method's name: its settings (with defaults, allowed values and a parser for text, from which
the CLI builds its options), how its extractor is loaded (one layer or several), how the
explainer is built, and its hooks (`AuditHooks`: store columns, a prepare pass such as FAM's
class prototypes; `Method.explain_images`: what ``fastfem explain`` computes for a set of
images).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jax
import numpy as np

from fastfem.converters import FeatureExtractor, load
from fastfem.engine.runner import HostBatch, Runner
from fastfem.engine.step import Step


class Explainer(Protocol):
    """What callers use of an explainer (`fastfem.explainers.base.ExplainerBase` implements the
    plumbing; each method its ``step``, ``explain`` and ``resize_maps``)."""

    extractor: FeatureExtractor
    batch_size: int
    #: True for a method that explains PAIRS of images (FAM): ``explain(queries, references)``,
    #: scored by the similarity of its embeddings rather than a class score
    explains_pairs: bool

    @property
    def layer_names(self) -> tuple[str, ...]: ...

    def step(self, sample_shape: Sequence[int], *, resize: bool = True) -> Step: ...

    def explain(self, inputs: Any, *args: Any, **kwargs: Any) -> Any: ...

    def resize_maps(self, maps: jax.Array, out_hw: tuple[int, int]) -> jax.Array: ...

    def runner(self, step: Step) -> Runner: ...

    def run(
        self, step: Step, batches: Iterable[HostBatch], count: int | None = None
    ) -> Iterator[dict[str, np.ndarray]]: ...

    def device_batch(self) -> int: ...


@dataclass(frozen=True)
class Setting:
    """One keyword setting of a method: ``name`` (the keyword; ``--name`` with ``-`` for ``_``
    on the command line), its ``default``, the allowed ``choices`` (None: any), ``parse`` (a
    command-line text -> the value; raises ValueError naming the problem) and ``help``."""

    name: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] = str


#: ``(classes (P,), vectors (P, C))``: what a prepare pass returns (FAM: class prototypes).
Classes = tuple[np.ndarray, np.ndarray]
#: Runs a step over the prepare pass's source: yields ``(outputs, labels)`` per batch.
RunOver = Callable[[Step], Iterator[tuple[dict[str, np.ndarray], list[str | None]]]]


def plain_audit_step(explainer: Explainer, sample_shape: Sequence[int], classes: Any) -> Step:
    """The method's own step at its own resolution (the default of `AuditHooks.step`)."""
    del classes
    return explainer.step(sample_shape, resize=False)


def no_outputs(out: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """No method-specific columns (the default of `AuditHooks.outputs`)."""
    del out
    return {}


@dataclass(frozen=True)
class AuditHooks:
    """What a method adds to `fastfem.audit` beyond its map (defaults: nothing).

    Attributes:
      columns: its store columns, in order.
      class_columns: those of ``columns`` that hold class indices (stored with the class names).
      prepare: a pass over a labelled source before the run, ``prepare(explainer, sample_shape,
        run_over, where) -> Classes``; rows are then explained against the class of their
        label (batches carry ``target``: its index, -1 for none).
      step: the audit's step, ``step(explainer, sample_shape, classes or None) -> Step``.
      outputs: its columns from the step's outputs, inside the jitted step.
      manifest: the settings the manifest records besides `Method.settings`.
    """

    columns: tuple[str, ...] = ()
    class_columns: tuple[str, ...] = ()
    prepare: Callable[[Any, Sequence[int], RunOver, str], Classes] | None = None
    step: Callable[[Any, Sequence[int], Any], Step] = plain_audit_step
    outputs: Callable[[Mapping[str, jax.Array]], dict[str, jax.Array]] = no_outputs
    manifest: Callable[[Any], dict[str, Any]] = lambda explainer: {}


def explain_each(
    explainer: Explainer, images: np.ndarray, references: np.ndarray | None, progress: bool
) -> tuple[np.ndarray, dict[str, Any], list[dict] | None]:
    """``fastfem explain`` of a one-image method: ``(maps, summary items, None)``."""
    if references is not None:
        raise ValueError("--references is only used by methods that explain pairs of images")
    return explainer.explain(images, progress=progress), {}, None


def one_layer(model: Any, layers: list[Any] | None, include_output: bool) -> FeatureExtractor:
    """The extractor of a one-layer method: ``layers`` None (Xplique's default: the last conv
    layer) or one layer name/index; a ValueError for several."""
    if layers is not None and len(layers) != 1:
        raise ValueError(f"this method explains one layer; got layer={layers!r}")
    return load(model, layers=None if layers is None else layers[0], include_output=include_output)


@dataclass(frozen=True)
class Method:
    """One explanation method (module docstring).

    Attributes:
      name: its name (``method=`` / ``--method``).
      summary: one line for the CLI's help.
      build: ``build(extractor, batch_size, settings) -> Explainer``.
      settings: its keyword settings.
      load: ``load(model, layers or None, include_output) -> FeatureExtractor``.
      multi_layer: it explains several layers at once (``layer="a,b"``).
      audit: its audit hooks; None: the audit does not run it.
      explain_images: what ``fastfem explain`` computes: ``(explainer, images, references or
        None, progress) -> (maps, summary items, pairs rows or None)``.
    """

    name: str
    summary: str
    build: Callable[[FeatureExtractor, int, Mapping[str, Any]], Any]
    settings: tuple[Setting, ...] = ()
    load: Callable[[Any, list[Any] | None, bool], FeatureExtractor] = one_layer
    multi_layer: bool = False
    audit: AuditHooks | None = field(default_factory=AuditHooks)
    explain_images: Callable[..., tuple[np.ndarray, dict[str, Any], list[dict] | None]] = (
        explain_each
    )

    def values(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Its settings: ``given`` over the defaults (a value None: the default)."""
        return {
            s.name: s.default if given.get(s.name) is None else given[s.name] for s in self.settings
        }
