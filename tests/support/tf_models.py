"""A small tf_keras (Keras 2) CNN with fixed random weights, for the TensorFlow front-end tests."""

from __future__ import annotations

import numpy as np

SHAPE = (28, 28, 3)


def tf_keras_cnn(activation: str = "relu", seed: int = 0):
    """conv -> BN -> act -> conv -> act(named 'act_b') -> GAP -> dense, random fixed weights."""
    import tf_keras

    L = tf_keras.layers
    inputs = tf_keras.Input(SHAPE, name="image")
    x = L.Conv2D(8, 3, name="conv_a")(inputs)
    x = L.BatchNormalization(name="bn_a")(x)
    x = L.Activation("relu", name="relu_a")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(16, 3, padding="same", name="conv_b")(x)
    x = L.Activation(activation, name="act_b")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(4, name="dense")(x)
    model = tf_keras.Model(inputs, outputs, name="tfk_cnn")
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.weights:
        if "moving_variance" in w.name:
            weights.append(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
        else:
            weights.append((rng.normal(size=w.shape) * 0.3).astype(np.float32))
    model.set_weights(weights)
    return model
