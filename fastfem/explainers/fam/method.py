"""FAM as a `fastfem.explainers.method.Method`: its settings, its ``fastfem explain`` pairing
and its audit hooks (each image against its class prototype)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.engine.step import Step
from fastfem.explainers.fam.explainer import FAM
from fastfem.explainers.fam.planning import class_prototypes
from fastfem.explainers.method import AuditHooks, Classes, Method, RunOver, Setting
from fastfem.kernels.fam import SIMILARITIES

#: FAM's store columns: the similarity to the explained prototype, its class, the nearest one's.
COLUMNS: tuple[str, ...] = ("similarity", "prototype", "nearest_prototype")


def explain_images(
    fam: FAM, images: np.ndarray, references: np.ndarray | None, progress: bool
) -> tuple[np.ndarray, dict[str, Any], list[dict]]:
    """FAM maps of each image vs its reference (``references``, paired one to one) or, when
    None, vs its nearest neighbour among the other images (leave-one-out retrieval). Returns
    ``(maps, summary items, one row per image: its reference's index and the similarity)``."""
    if references is not None:
        maps = fam.explain(images, references, progress=progress)
        sims, refs = fam.last_similarities, np.arange(len(images))
        how = "references (paired one to one)"
    else:
        res = fam.explain_retrieval(images, images, top_k=1, exclude_self=True, progress=progress)
        maps, sims, refs = res.maps[:, 0], res.similarities[:, 0], res.indices[:, 0]
        how = "nearest neighbour among the others"
    pairs = [{"reference": int(r), "similarity": float(s)} for r, s in zip(refs, sims, strict=True)]
    items = {"similarity": fam.similarity, "pooling": fam.pooling, "reference": how}
    return maps, items, pairs


def prototypes(fam: FAM, sample_shape: Sequence[int], run_over: RunOver, where: str) -> Classes:
    """``(classes, prototypes (P, C))``: the mean GAP embedding per label over the good images
    run over (`class_prototypes`); unlabeled images are left out unless no image has a label
    (then one prototype ``"(all)"`` of every image)."""
    labels: list[str | None] = []
    outs = []
    for out, labs in run_over(fam.embed_step(sample_shape)):
        labels.extend(labs)
        outs.append(out)
    if not outs:
        raise ValueError(f"FAM audit: no readable image in {where} for the prototypes")
    e = np.concatenate([o["embedding"] for o in outs])
    keep = np.concatenate([o["finite"].all(axis=1) for o in outs])
    lab = np.asarray(["(all)" if v is None else str(v) for v in labels], dtype=object)
    has_label = np.asarray([v is not None for v in labels])
    if has_label.any():
        keep &= has_label
    if not keep.any():
        raise ValueError(f"FAM audit: no finite embedding in {where}")
    return class_prototypes(e[keep], lab[keep].astype(str))


def episode_step(fam: FAM, sample_shape: Sequence[int], classes: Classes) -> Step:
    """Each image against the prototype of its class (`FAM.episode_step`), feature resolution."""
    return fam.episode_step(sample_shape, classes[1], resize=False)


def columns(out: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """FAM's columns from its episode step: the similarity to the explained prototype, that
    prototype's index and the nearest one's."""
    target = out["targets"]
    sim = jnp.take_along_axis(out["similarities"], target[:, None], axis=1)[:, 0]
    return {"similarity": sim, "prototype": target, "nearest_prototype": out["predictions"]}


METHOD = Method(
    name="fam",
    summary="FAM: why an image resembles another (similarity models; audit: its class prototype)",
    build=lambda extractor, batch_size, s: FAM(
        extractor, similarity=s["similarity"], batch_size=batch_size
    ),
    settings=(Setting("similarity", "cosine", "FAM's similarity (fam)", choices=SIMILARITIES),),
    audit=AuditHooks(
        columns=COLUMNS,
        class_columns=("prototype", "nearest_prototype"),
        prepare=prototypes,
        step=episode_step,
        outputs=columns,
        manifest=lambda fam: {
            "pooling": fam.pooling,
            "similarity": fam.similarity,
            "weights": fam.normalize,
        },
    ),
    explain_images=explain_images,
)
