"""CPU speed of the generated TransformNet per backend, plus style-encode and network-generation time.

    METASTYLE_VGG16=/path/to/vgg16.safetensors python benchmarks/speed.py --sizes 512 1024 --repeats 7

Backends (one style, batch 1, fp32, all measured interleaved round-robin so background load hits them alike):

* ``eager``         ``transform``, the network as trained, on a contiguous (NCHW) tensor;
* ``channels_last`` the same with input and conv weights in channels-last (NHWC) memory format;
* ``polyphase``     ``transform_polyphase``, the same network rewritten on the half-resolution grid: what
                    ``Stylizer.run`` runs in PyTorch (small images, GPU);
* ``compile``       ``torch.compile(transform)`` (inductor; compile time reported separately, per size; with
                    torch 2.13 inductor fails on the polyphase form: "vr must not be None for symbol");
* ``ort``           the polyphase network exported to ONNX and run by ONNX Runtime: the product's CPU path
                    for big images (export + session time reported);
* ``ort_plain``     the plain network in ONNX Runtime (the product's CPU path before the polyphase form).

Times are wall-clock medians, plus process CPU time, which background load distorts less (with --threads 1
on a loaded machine it is the fairer figure). Every backend's output is compared with eager (max abs diff,
also relative to eager's max |y|) so a fast-but-wrong path cannot win. Weights do not change speed: without
``--model`` a random MetaNet(8) is used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metastyle_batch import memory  # noqa: E402
from metastyle_batch.model.meta import MetaNet  # noqa: E402
from metastyle_batch.model.transform import (Params, polyphase, single_network, transform,  # noqa: E402
                                             transform_polyphase)
from metastyle_batch.model.vgg import STYLE_LAYERS, style_vector  # noqa: E402

Backend = Callable[[torch.Tensor], torch.Tensor]


def _now() -> float:
    return time.perf_counter()


def plain_onnx(params: Params, base: int) -> bytes:
    """The network as trained (no polyphase rewrite), traced by torch's TorchScript ONNX exporter: the graph the
    product shipped before it wrote its own."""
    import io
    import warnings

    class Plain(torch.nn.Module):
        def forward(self, x):
            return transform(x, params, base)

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Plain(), (torch.rand(1, 3, 64, 64),), buf, input_names=["image"], output_names=["stylized"],
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "stylized": {0: "n", 2: "h", 3: "w"}},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


def make_backends(params: Params, base: int, args) -> tuple[dict[str, Backend], dict[str, str]]:
    """Backends that could be built, and notes (build time or the reason one is missing)."""
    backends: dict[str, Backend] = {}
    notes: dict[str, str] = {}
    backends["eager"] = lambda x: transform(x, params, base)

    cl = {k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v)
          for k, v in single_network(params).items()}
    backends["channels_last"] = lambda x: transform(x.contiguous(memory_format=torch.channels_last), cl, base)
    poly = polyphase(params)
    backends["polyphase"] = lambda x: transform_polyphase(x, poly, base)

    if not args.no_compile:
        flat = single_network(params)
        if args.compile_dynamic:  # params as inputs and symbolic sizes: no recompile per style or (most) sizes
            compiled = torch.compile(transform, dynamic=True)
            backends["compile"] = lambda x: compiled(x, flat, base)
        else:
            backends["compile"] = torch.compile(lambda x: transform(x, flat, base), dynamic=False)
        notes["compile"] = (f"inductor, dynamic={args.compile_dynamic}; compiled lazily on the first call per "
                            "size: its warm-up s is the compile time (warm if inductor's on-disk cache already holds "
                            "it; TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 measures a cold compile)")

    if not args.no_ort:
        try:
            from metastyle_batch.onnx_export import OrtNetwork, export_onnx_bytes

            t0 = _now()
            blob = export_onnx_bytes(params, base)
            t1 = _now()
            ort = OrtNetwork(blob, threads=args.threads)
            backends["ort"] = lambda x: torch.from_numpy(ort.run(x.numpy()))
            t2 = _now()
            plain = OrtNetwork(plain_onnx(single_network(params), base), threads=args.threads)
            backends["ort_plain"] = lambda x: torch.from_numpy(plain.run(x.numpy()))
            notes["ort"] = (f"export {1e3 * (t1 - t0):.0f} ms + session {1e3 * (t2 - t1):.0f} ms, "
                            f"{len(blob) / 1e3:.0f} kB graph")
        except ImportError as e:
            notes["ort"] = f"unavailable ({e})"
    return backends, notes


def warm_up(name: str, fn: Backend, x: torch.Tensor, ref: torch.Tensor | None, timeout: float) -> tuple[float, str]:
    """First call (compiles, for ``compile``); returns (seconds, '' or why the backend is dropped)."""
    t0 = _now()
    try:
        y = fn(x)
        y = fn(x)  # second call: some backends (compile, ORT arena) settle on the second run
    except Exception as e:  # noqa: BLE001 - a broken backend is reported, never fatal
        traceback.print_exc(limit=2)
        return _now() - t0, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    took = _now() - t0
    if ref is not None and y.shape != ref.shape:
        return took, f"wrong output shape {tuple(y.shape)}"
    if took > timeout:
        return took, f"warm-up took {took:.0f} s > --compile-timeout {timeout:.0f} s"
    return took, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square image sides (multiple of 4)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per backend and size (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch and ORT intra-op threads (default: torch's)")
    ap.add_argument("--model", type=Path, default=None, help="a metastyle .safetensors model (default: random base 8)")
    ap.add_argument("--base", type=int, default=8, help="base width of the random model")
    ap.add_argument("--style-size", type=int, default=None, help="style encode size (default: model's, else 256)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-dynamic", action="store_true",
                    help="torch.compile(dynamic=True) with params as inputs (default: static shapes, params baked in)")
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--compile-timeout", type=float, default=300.0,
                    help="drop a backend whose first two calls at a size take longer than this (s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    kept = memory.keep_freed_memory()  # as Stylizer does on the CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    torch.manual_seed(args.seed)

    if args.model:
        from metastyle_batch.model.io import load_model

        meta, info = load_model(args.model)
    else:
        meta, info = MetaNet(args.base), {}
    meta.eval().requires_grad_(False)
    style_size = args.style_size or int(info.get("style_size", 256))
    base = meta.base

    try:
        from metastyle_batch.model.vgg import load_vgg

        vgg = load_vgg(download=False)
    except Exception as e:  # noqa: BLE001
        print(f"style encode skipped: no VGG-16 weights ({type(e).__name__}: {e}); set METASTYLE_VGG16")
        vgg = None

    style = torch.rand(1, 3, style_size, style_size)

    def encode() -> torch.Tensor:
        return meta.encode_features(style_vector(vgg(style, STYLE_LAYERS)))[0]

    print(f"torch {torch.__version__}, {args.threads} threads, base {base}, style size {style_size}, "
          f"{'model ' + str(args.model) if args.model else 'random model'}, freed memory kept: {kept}")

    with torch.inference_mode():
        hidden = encode() if vgg is not None else torch.relu(torch.randn(meta.hidden_dim))
        params = {k: v.contiguous() for k, v in meta.network(hidden).items()}
        backends, notes = make_backends(params, base, args)

        inputs = {s: torch.rand(1, 3, s, s) for s in args.sizes}
        refs: dict[int, torch.Tensor] = {}
        warm: dict[tuple[str, int], float] = {}
        dropped: dict[str, str] = {}
        for s in args.sizes:
            for name, fn in backends.items():
                if name in dropped:
                    continue
                took, why = warm_up(name, fn, inputs[s], refs.get(s), args.compile_timeout)
                warm[name, s] = took
                if why:
                    dropped[name] = f"{why} (at {s}²)"
                    continue
                if name == "eager":
                    refs[s] = fn(inputs[s]).clone()
        for name in dropped:
            backends.pop(name, None)

        # correctness against eager, on every size
        diffs: dict[tuple[str, int], tuple[float, float]] = {}
        for s in args.sizes:
            ref = refs[s]
            scale = ref.abs().max().item()
            for name, fn in backends.items():
                d = (fn(inputs[s]).float() - ref).abs().max().item()
                diffs[name, s] = (d, d / max(scale, 1e-12))

        # timing, interleaved: every round runs encode, generate, then every backend at every size
        times: dict[tuple[str, int], list[float]] = {(n, s): [] for n in backends for s in args.sizes}
        cpu: dict[tuple[str, int], list[float]] = {(n, s): [] for n in backends for s in args.sizes}
        enc_ms: list[float] = []
        gen_ms: list[float] = []
        for _ in range(args.repeats):
            if vgg is not None:
                t0 = _now()
                encode()
                enc_ms.append(1e3 * (_now() - t0))
            t0 = _now()
            meta.network(hidden)
            gen_ms.append(1e3 * (_now() - t0))
            for s in args.sizes:
                for name, fn in backends.items():
                    c0, t0 = time.process_time(), _now()
                    fn(inputs[s])
                    times[name, s].append(1e3 * (_now() - t0))
                    cpu[name, s].append(1e3 * (time.process_time() - c0))

    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    head = f"{'backend':<14}" + "".join(f"{f'{s}² ms':>12}{'×eager':>8}{'max|Δ|':>10}{'rel':>9}" for s in args.sizes)
    head += f"  {'warm-up s (per size)'}"
    print(head)
    print("-" * len(head))
    for name in backends:
        row = f"{name:<14}"
        for s in args.sizes:
            d, rel = diffs[name, s]
            row += f"{med[name, s]:>12.1f}{med['eager', s] / med[name, s]:>8.2f}{d:>10.1e}{rel:>9.1e}"
        row += "  " + " / ".join(f"{warm[name, s]:.1f}" for s in args.sizes)
        print(row)
    spread = {k: (min(v), max(v)) for k, v in times.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    print("\nCPU ms (process time, all threads) and ×eager: " + "; ".join(
        f"{n} {s}²: {cmed[n, s]:.0f} ({cmed['eager', s] / cmed[n, s]:.2f}×)" for s in args.sizes for n in backends))
    print("min–max ms: " + "; ".join(f"{n} {s}²: {spread[n, s][0]:.0f}–{spread[n, s][1]:.0f}"
                                      for s in args.sizes for n in backends))
    if enc_ms:
        print(f"style encode (VGG-16 relu1_2..relu4_3 at {style_size}² + meta hidden): "
              f"{statistics.median(enc_ms):.1f} ms median")
    print(f"network generation (meta.network(hidden), {sum(v.numel() for v in params.values())} params): "
          f"{statistics.median(gen_ms):.2f} ms median")
    for name, note in notes.items():
        print(f"{name}: {note}")
    for name, why in dropped.items():
        print(f"{name}: dropped — {why}")
    bad = [f"{n}@{s}" for (n, s), (_, rel) in diffs.items() if rel > 1e-4]
    if bad:
        print("MISMATCH vs eager (relative max diff > 1e-4): " + ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
