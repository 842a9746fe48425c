"""Regenerate the Keras fixtures of tests/weights_io/test_weights_io_keras.py (not run by the tests).

Writes small Keras-written HDF5 files and Keras' own outputs on fixed inputs
(the oracle), with keras 3.15.1 on the torch backend:

    KERAS_BACKEND=torch python tests/data/weights_io/make_keras_fixtures.py

* ``keras3_vgg.weights.h5``   -- Keras 3 ``save_weights`` of a VGG16-shaped model
  (the real layer names block1_conv1 ... fc1, fc2, predictions; small widths,
  64x64 input, so that fc1's H, W, C row order matters);
* ``keras3_vgg_full.h5``      -- ``model.save`` (legacy full-model HDF5, with model_config);
* ``keras_legacy_vgg.h5``     -- Keras' legacy ``save_weights_to_hdf5_group`` layout
  (root ``layer_names``, per-layer ``weight_names``);
* ``keras_lstm_relu_full.h5`` -- full model: LSTM(activation="relu"), return_sequences;
* ``keras3_lstm.weights.h5``  -- Keras 3 weights of a tanh LSTM;
* ``keras_outputs.npz``       -- inputs and Keras' outputs for all of the above.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py
import keras
import numpy
from keras.src.legacy.saving import legacy_h5_format

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTHS = [2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 5, 5, 5]
FC = [6, 7]
NCLS = 5
S = 64


def vgg_like():
    keras.utils.set_random_seed(0x5EED)
    layers = [keras.Input((S, S, 3))]
    j = 0
    for b, n in [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]:
        for k in range(1, n + 1):
            layers.append(
                keras.layers.Conv2D(
                    WIDTHS[j],
                    3,
                    padding="same",
                    activation="relu",
                    bias_initializer="random_normal",
                    name=f"block{b}_conv{k}",
                )
            )
            j += 1
        layers.append(keras.layers.MaxPooling2D(2, 2, name=f"block{b}_pool"))
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(FC[0], activation="relu", bias_initializer="random_normal", name="fc1"),
        keras.layers.Dense(FC[1], activation="relu", bias_initializer="random_normal", name="fc2"),
        keras.layers.Dense(NCLS, activation="softmax", bias_initializer="random_normal", name="predictions"),
    ]
    return keras.Sequential(layers, name="vgg16")


def lstm_model(act, T=6, D=4, H=3):
    keras.utils.set_random_seed(0x1057)
    return keras.Sequential(
        [
            keras.Input((T, D)),
            keras.layers.LSTM(
                H, activation=act, return_sequences=True, bias_initializer="random_normal", name="lstm"
            ),
        ]
    )


def main():
    rng = numpy.random.default_rng(0xF1C5)
    out = {}
    vgg = vgg_like()
    x = rng.uniform(0, 1, (2, S, S, 3)).astype("float32")
    out["vgg_x_nhwc"] = x
    out["vgg_probs"] = keras.ops.convert_to_numpy(vgg.predict(x, verbose=0))
    vgg.save_weights(os.path.join(HERE, "keras3_vgg.weights.h5"))
    vgg.save(os.path.join(HERE, "keras3_vgg_full.h5"))
    with h5py.File(os.path.join(HERE, "keras_legacy_vgg.h5"), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, vgg)
    for act, fname, save in (
        ("relu", "keras_lstm_relu_full.h5", "save"),
        ("tanh", "keras3_lstm.weights.h5", "save_weights"),
    ):
        m = lstm_model(act)
        xs = rng.standard_normal((2, 6, 4)).astype("float32")
        out[f"lstm_{act}_x"] = xs
        out[f"lstm_{act}_h"] = keras.ops.convert_to_numpy(m.predict(xs, verbose=0))
        getattr(m, save)(os.path.join(HERE, fname))
    numpy.savez(os.path.join(HERE, "keras_outputs.npz"), **out)


if __name__ == "__main__":
    main()
