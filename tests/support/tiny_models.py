"""Small fixed-seed Keras models for tests (Keras must already run the JAX backend)."""

import numpy as np


def randomize_weights(model, seed: int = 0, scale: float = 0.3):
    """Give every weight a fixed-seed normal value so activations are non-trivial."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [(rng.normal(size=w.shape) * scale).astype(np.float32) for w in model.get_weights()]
    )
    return model


def small_cnn(input_shape=(32, 32, 3), seed: int = 0, outputs: int = 3, activation=None):
    """conv(valid) -> relu -> pool -> conv -> activation -> flatten -> dense: a tiny classifier
    (``outputs`` units, the dense layer's ``activation``)."""
    import keras

    layers = keras.layers
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(8, 3, name="conv_a")(inputs)
    x = layers.Activation("relu", name="relu_a")(x)
    x = layers.MaxPooling2D(name="pool_a")(x)
    x = layers.Conv2D(16, 3, padding="same", name="conv_b")(x)
    x = layers.Activation("relu", name="relu_b")(x)
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(outputs, activation=activation, name="dense")(x)
    return randomize_weights(keras.Model(inputs, out, name="small_cnn"), seed)
