"""A keras.applications model audited on a folder of JPEGs of mixed sizes with its own
preprocessing mode stores the maps `fastfem.FEM` gives on Keras's ``preprocess_input`` of the
same decoded pixels: ResNet50 (``caffe``), MobileNetV2 (``tf``), DenseNet121 (``torch``), random
weights, 64x64 inputs to keep them fast (2x2 feature maps, so FEM's k is 1: with k = 2 no value
of four can reach the mean + 2 sigma and every map would be 0)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fastfem import FEM
from fastfem.audit import ResultStore, audit
from fastfem.data.records import ReadOptions
from fastfem.data.sources import open_source

SIZE = 64
K = 1.0


def jpeg_folder(root, n: int = 6) -> None:
    rng = np.random.default_rng(1)
    root.mkdir()
    for i in range(n):
        h, w = (int(v) for v in rng.integers(48, 160, 2))
        smooth = np.linspace(0, 1, w)[None, :, None] * rng.random((1, 1, 3)) * 255
        noise = rng.random((h, w, 3)) * 60
        img = np.clip(smooth + noise, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"photo-{i}.jpg", quality=90)


APPS = {
    "ResNet50": ("resnet50", "caffe"),
    "MobileNetV2": ("mobilenet_v2", "tf"),
    "DenseNet121": ("densenet", "torch"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(APPS))
def test_keras_application_audit_equals_fem_on_keras_preprocessing(tmp_path, name):
    import keras

    module, mode = APPS[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(SIZE, SIZE, 3), classes=10)
    jpeg_folder(tmp_path / "photos")
    summary = audit(
        tmp_path / "photos", model, out=tmp_path / "out", k=K, fit="crop", preprocess=mode
    )
    assert summary.ok == 6 and summary.errors == 0
    store = ResultStore(tmp_path / "out")
    rows, maps = store.read_rows(), store.read_maps()
    # the same decoded pixels (uint8) the audit read, and Keras's own preprocessing of them
    src = open_source(tmp_path / "photos", (SIZE, SIZE, 3), ReadOptions(fit="crop"))
    recs = {r.id: r.image for r in src.read(lambda i, rid: True)}
    x = np.stack([recs[rid] for rid in rows["id"]])
    assert x.dtype == np.uint8
    pre = getattr(keras.applications, module).preprocess_input(x.astype(np.float32))
    fem = FEM(model, k=K)
    ref = np.asarray(fem.explain(pre, resize=False)).reshape(maps.shape)
    assert store.manifest()["layer"] == fem.layer_name
    assert np.count_nonzero(ref) >= ref.size // 4  # maps with something in them
    assert np.abs(maps - ref).max() <= 1e-4 * np.abs(ref).max()
    # the mode matters: the unit-scaled pixels give other maps
    unit = np.asarray(fem.explain(x.astype(np.float32) / 255, resize=False)).reshape(maps.shape)
    assert np.abs(maps - unit).max() > 1e-2 * np.abs(ref).max()
