"""The style encoder without torch: ImageNet VGG-16 to relu4_3 and its 1920 mean/std statistics as one ONNX graph.

Built from the same weights as :class:`~metastyle_batch.model.vgg.VGG16` (which trains) and run with ONNX Runtime.
"""

from __future__ import annotations

import numpy as np

from ..onnxgraph import Graph

# torchvision's vgg16().features[:23]: (in, out) per conv, "M" for max-pool.
CFG = [(3, 64), (64, 64), "M", (64, 128), (128, 128), "M",
       (128, 256), (256, 256), (256, 256), "M", (256, 512), (512, 512), (512, 512)]
TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
STYLE_DIM = 2 * (64 + 128 + 256 + 512)  # mean and std per channel: 1920
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
EPS = 1e-5  # keeps the std finite on flat (solid-colour) input


def encoder_onnx_bytes(state: dict[str, np.ndarray], opset: int = 17) -> bytes:
    """``image`` (N, 3, H, W) RGB in [0, 1] → ``style_vector`` (N, 1920): [means of all taps, stds of all taps]."""
    g = Graph("metastyle_style_encoder")
    x = g.input("image", ["batch", 3, "height", "width"])
    x = g.op("Div", g.op("Sub", x, g.const(np.array(MEAN, np.float32).reshape(1, 3, 1, 1))),
             g.const(np.array(STD, np.float32).reshape(1, 3, 1, 1)))
    wanted = {index: name for name, index in TAPS.items()}
    means, stds, index = {}, {}, 0
    for item in CFG:
        if item == "M":
            x = g.op("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2])
            index += 1
            continue
        x = g.op("Conv", x, g.const(state[f"{index}.weight"]), g.const(state[f"{index}.bias"]),
                 kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        x = g.op("Relu", x)
        index += 2
        if index - 1 in wanted:
            name = wanted[index - 1]
            mean = g.op("ReduceMean", x, axes=[2, 3], keepdims=1)
            centred = g.op("Sub", x, mean)
            var = g.op("ReduceMean", g.op("Mul", centred, centred), axes=[2, 3], keepdims=0)
            means[name] = g.op("Flatten", mean, axis=1)
            stds[name] = g.op("Sqrt", g.op("Add", var, g.const(np.array(EPS, np.float32))))
    g.op("Concat", *[means[n] for n in STYLE_LAYERS], *[stds[n] for n in STYLE_LAYERS], axis=1, out="style_vector")
    return g.model([("style_vector", ["batch", STYLE_DIM])], opset)


class StyleEncoder:
    """An ONNX Runtime session of :func:`encoder_onnx_bytes`; call it on (N, 3, H, W) float32 in [0, 1]."""

    def __init__(self, state: dict[str, np.ndarray]):
        from ..ort import session

        self.session = session(encoder_onnx_bytes(state))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        (vec,) = self.session.run(["style_vector"], {"image": np.ascontiguousarray(x, np.float32)})
        return vec
