"""Fast fixtures for the FAM tests: a one-conv JAX feature extractor (compiles in a blink) and
images whose embeddings are well apart, so top-k and prototype decisions have clear margins."""

import jax
import numpy as np
from fastfem.converters import from_fn


def conv_extractor(input_shape=(16, 16, 3), channels=8, seed=0):
    """relu(conv3x3 stride 2 + b): (N, 16, 16, 3) -> (N, 8, 8, channels), a pure JAX function."""
    rng = np.random.default_rng(seed)
    params = {
        "w": (rng.normal(size=(3, 3, input_shape[2], channels)) * 0.5).astype(np.float32),
        "b": (rng.normal(size=channels) * 0.2).astype(np.float32),
    }

    def apply(p, x):
        y = jax.lax.conv_general_dilated(
            x, p["w"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jax.nn.relu(y + p["b"])

    return from_fn(apply, params, input_shape, ("conv",))


def spread_images(n, seed=0, shape=(16, 16, 3)):
    """Random images with a per-image, per-channel gain and offset (distinct embeddings)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape)) * rng.uniform(0.1, 3.0, (n, 1, 1, shape[2]))
    x += rng.uniform(-1.0, 1.0, (n, 1, 1, shape[2]))
    return x.astype(np.float32)


class FakeDataset:
    """A duck-typed ``tf.data.Dataset`` of unbatched images made lazily (never materialised).

    ``pulled`` counts images handed out; ``passes`` counts iterations started.
    """

    def __init__(self, n, seed=0, shape=(16, 16, 3), chunk=64):
        self.n, self.seed, self.shape, self.chunk = n, seed, shape, chunk
        self.pulled = 0
        self.passes = 0

        class _Spec:
            pass

        self.element_spec = _Spec()
        self.element_spec.shape = shape

    def as_numpy_iterator(self):
        self.passes += 1
        for start in range(0, self.n, self.chunk):
            block = spread_images(min(self.chunk, self.n - start), self.seed + start, self.shape)
            for img in block:
                self.pulled += 1
                yield img

    def materialise(self):
        return np.stack(list(self.as_numpy_iterator()))
