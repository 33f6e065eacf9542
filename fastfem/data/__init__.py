"""Images in: decoding, exact fit geometry, Keras preprocessing, row ids, folder walks, boxes,
and the sources (folders, arrays, ``.npz``, TFRecord, ``tf.data``, iterables, the bundled
sample) that every verb and the Python API read through."""
