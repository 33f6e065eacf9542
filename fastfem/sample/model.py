"""The small CNN bundled with fastfem (trained weights: ``sample_cnn.keras``).

Three ReLU ``Conv2D`` layers (the last named ``"last_conv"``, the layer FEM/FAM
explanations read by default) with max pooling between them, a
``GlobalAveragePooling2D`` named ``"embedding"`` and a softmax ``Dense`` named
``"predictions"``.  Keras is imported lazily so that importing this module
never selects a backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastfem.sample.dataset import IMAGE_SIZE

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["LAST_CONV", "build_model"]

LAST_CONV = "last_conv"


def build_model(num_classes: int = 4, image_size: int = IMAGE_SIZE) -> keras.Model:
    """Build the (untrained) sample CNN: input ``(image_size, image_size, 3)`` in ``[0, 1]``
    (default 64).

    Layers: conv 3x3x16 -> maxpool 2 -> conv 3x3x32 -> maxpool 2 ->
    conv 3x3x64 (``last_conv``, image_size / 4 spatial: 16x16 at 64 px) -> global average pooling
    (``embedding``) -> dense softmax (``predictions``).  About 24k parameters.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name=LAST_CONV)(x)
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="fastfem_sample_cnn")
