"""The ONNX export of one generated network matches PyTorch's ``transform`` at any (dynamic) size."""

import io

import numpy as np
import pytest
import torch

from conftest import random_meta
from metastyle_batch.model.transform import crop_back, pad_to_multiple, transform

pytest.importorskip("onnxruntime", reason="onnxruntime is a dependency, but a source checkout may lack it")

from metastyle_batch.onnx_export import INPUT_NAME, OUTPUT_NAME, OrtNetwork, export_onnx  # noqa: E402


def _ort(net: OrtNetwork, x: torch.Tensor, weights=None) -> torch.Tensor:
    return torch.from_numpy(net.run(x.numpy(), weights))


@pytest.fixture(scope="module")
def generated():
    meta = random_meta(3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        hidden = torch.relu(torch.randn(meta.hidden_dim))
    with torch.no_grad():
        params = meta.network(hidden)  # G == 1: generated weights carry the group dim
    buf = io.BytesIO()
    export_onnx(params, 8, buf)
    return params, buf.getvalue()


@torch.no_grad()
def test_onnx_matches_transform_at_two_sizes_and_batches(generated):
    params, blob = generated
    net = OrtNetwork(blob, threads=1)
    torch.manual_seed(0)
    for shape in [(1, 3, 48, 64), (2, 3, 100, 36)]:
        x = torch.rand(*shape)
        ref = transform(x, params, 8)
        y = _ort(net, x)
        assert y.shape == ref.shape and y.dtype == torch.float32
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_onnx_graph_has_dynamic_axes_and_output_is_unclamped(generated):
    onnx = pytest.importorskip("onnx")
    params, blob = generated
    model = onnx.load_from_string(blob)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert dims[INPUT_NAME] == ["batch", 3, "height", "width"]
    assert dims[OUTPUT_NAME][1] == 3 and all(isinstance(d, str) for d in dims[OUTPUT_NAME][::2])
    x, _ = pad_to_multiple(torch.rand(1, 3, 30, 30))
    ref = transform(x, params, 8)
    assert ref.min() < 0 or ref.max() > 1  # a random network leaves [0, 1]; the graph must not clamp
    torch.testing.assert_close(_ort(OrtNetwork(blob, threads=1), x), ref, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_graph_is_valid_onnx_at_every_opset_the_cli_offers(generated):
    onnx = pytest.importorskip("onnx")
    from metastyle_batch.onnx_export import export_onnx_bytes

    params, _ = generated
    x = torch.rand(1, 3, 32, 36)
    ref = transform(x, params, 8)
    for opset in (13, 21):  # `metastyle-batch export --opset` accepts 13..21
        blob = export_onnx_bytes(params, 8, opset)
        model = onnx.load_from_string(blob)  # our hand-written protobuf, parsed by onnx itself
        assert model.opset_import[0].version == opset
        onnx.checker.check_model(model, full_check=True)
        torch.testing.assert_close(_ort(OrtNetwork(blob, threads=1), x), ref, atol=1e-4, rtol=1e-4)


def test_export_rejects_several_networks_and_bad_sizes(generated):
    params, blob = generated
    two = {k: (torch.cat([v, v]) if v.dim() == 5 or (k.endswith(".bias") and v.dim() == 2) else v)
           for k, v in params.items()}
    with pytest.raises(ValueError, match="G != 1"):
        export_onnx(two, 8, io.BytesIO())
    with pytest.raises(ValueError, match="multiples of 4"):
        OrtNetwork(blob, threads=1).run(torch.rand(1, 3, 30, 32).numpy())


@torch.no_grad()
def test_sessions_share_one_arena_and_big_calls_hand_it_back(generated):
    """Two sessions on the process-wide arena, one handing it back after every call (keep_pixels=0): the
    same numbers either way, and both stay right when calls of different sizes alternate."""
    from metastyle_batch import ort

    params, blob = generated
    keep, shrink = OrtNetwork(blob, threads=1), OrtNetwork(blob, threads=1, keep_pixels=0)
    assert ort._shared_arena is True  # onnxruntime >= 1.17 (the pinned minimum) supports it
    for shape in [(1, 3, 64, 64), (1, 3, 32, 48), (2, 3, 64, 64)]:
        x = torch.rand(*shape)
        ref = transform(x, params, 8)
        torch.testing.assert_close(_ort(keep, x), ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(_ort(shrink, x), _ort(keep, x))


@torch.no_grad()
def test_weights_as_inputs_graph_runs_any_network_of_the_model(generated):
    """One session of the weights-as-inputs graph runs each frame's own network (video between keyframes)."""
    from metastyle_batch.onnx_export import export_onnx_bytes, network_feed

    params, blob = generated
    net = OrtNetwork(export_onnx_bytes(params, 8, weights_as_inputs=True), threads=1)
    other = {k: v * 1.1 if k.endswith(".weight") and v.dim() == 5 else v for k, v in params.items()}
    x = torch.rand(1, 3, 40, 52)
    for p in (params, other):
        torch.testing.assert_close(_ort(net, x, network_feed(p)), transform(x, p, 8), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(_ort(net, x, network_feed(params)), _ort(net, x, network_feed(other)))


def test_cpu_engine_gives_the_trained_networks_pixels_whole_and_tiled():
    """OrtStylizer.run (the CPU product path) against the plain PyTorch network, whole and over tiles."""
    from metastyle_batch.engine_ort import OrtStylizer

    engine = OrtStylizer(disk_cache=False)
    params = engine.network(np.maximum(np.random.default_rng(1).standard_normal(engine.meta.hidden_dim), 0))
    ref_params = {k: torch.from_numpy(v) for k, v in params.items()}
    for shape, max_pixels in [((1, 3, 61, 83), None), ((2, 3, 40, 40), None), ((1, 3, 130, 90), 4000)]:
        engine.max_pixels, engine.tile = max_pixels or (16 << 20), 32
        x = torch.rand(*shape)
        y = engine.run(x.numpy(), params)
        padded, size = pad_to_multiple(x)
        ref = crop_back(transform(padded, ref_params, 8), size).clamp(0, 1)
        assert y.shape == tuple(ref.shape)
        torch.testing.assert_close(torch.from_numpy(y), ref, atol=2e-3 if max_pixels else 1e-4, rtol=1e-4)
