"""The paper's extra tools: ``optimize`` (Gatys et al.), ``finetune`` (Johnson et al.), ``export`` (ONNX),
``texture`` (texture visualisation / generation) and ``interpolate`` (hidden-state interpolation strip).

Thin Typer shells over :mod:`metastyle_batch.train.gatys`, :mod:`metastyle_batch.train.finetune` (both need the
torch extra), :mod:`metastyle_batch.onnx_export` and the engine (:mod:`metastyle_batch.runtime`). Like the rest of the CLI:
one-line ``Error: …`` messages on stderr; exit 0 done, 1 the computation or the write failed, 2 usage error
(bad option, missing/unreadable input, existing output without --overwrite, model/VGG weights missing),
130 interrupted (outputs are written atomically, so nothing partial remains). Inputs are never overwritten.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import check_output
from .common import DEVICES as _DEVICES, check_device as _check_device, check_image_file, fail as _fail, \
    encode_style, guarded, load_stylizer as _load_stylizer, one_line as _one_line, require_torch_option, \
    usage_error as _usage_error


def register(app: typer.Typer) -> None:
    for command in (optimize, finetune, export, texture, interpolate):
        app.command(no_args_is_help=True)(command)


# ------------------------------------------------------------------------------------------ helpers


def _check_input(path: str | Path, what: str) -> Path:
    return check_image_file(path, what)


def _check_output(output: Path, inputs: list[Path], overwrite: bool, suffixes: tuple[str, ...], kind: str) -> Path:
    """Refuse a wrong extension, a folder, an input file, or an existing file without --overwrite."""
    dst = output.expanduser()
    if str(output) == "-":
        _usage_error("-o - (stdout) is not supported here; give an output file name")
    if dst.suffix.lower() not in suffixes:
        _usage_error(f"-o {output}: {kind} must end in {' or '.join(suffixes)}")
    for src in inputs:
        if os.path.lexists(dst) and os.path.samefile(src, dst):
            _usage_error(f"{output}: is an input file; choose another -o")
    check_output(dst, overwrite)
    parent = dst.parent
    if os.path.lexists(parent) and not parent.is_dir():
        _usage_error(f"{output}: {parent} is not a folder")
    return dst


def _encode(stylizer, path: Path):
    """Style image → code; unreadable images and missing VGG weights are usage errors."""
    return encode_style(stylizer, [path])


def _read_rgb(path: Path, what: str):
    from ..images import ImageError, read_image

    try:
        return read_image(path).frames[0]
    except ImageError as exc:
        _usage_error(f"{what} {exc}")


def _write(rgb, dst: Path, overwrite: bool) -> None:
    """(H, W, 3) float array in [0, 1] → a PNG/JPEG/… file, atomically."""
    from ..images import ImageError, Picture, write_image

    try:
        write_image(Picture([rgb], [None], [0], "png", 8, None), dst, overwrite=overwrite)
    except ImageError as exc:
        _fail(str(exc))


def _guarded(fn, *args) -> None:
    with guarded():
        fn(*args)


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


_Model = Annotated[Optional[Path], typer.Option(
    metavar="PATH", help="Meta network file (default: $METASTYLE_MODEL or the shipped model).")]
_Device = Annotated[str, typer.Option(metavar="NAME", help=f"Where to compute: {_DEVICES}.")]
_Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output (inputs are never replaced).")]


# ------------------------------------------------------------------------------------------ optimize


def optimize(
    content: Annotated[Path, typer.Argument(metavar="CONTENT", show_default=False, help="Content image.")],
    style: Annotated[str, typer.Option("--style", "-s", metavar="FILE", show_default=False, help="Style image.")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT", show_default=False,
                                         help="Output image (.png, .jpg, .webp, .tiff).")],
    steps: Annotated[int, typer.Option(min=1, metavar="N", help="Optimisation steps (L-BFGS iterations or Adam steps).")] = 200,
    size: Annotated[int, typer.Option(min=16, metavar="N",
                                      help="Downscale the content so its longer side is at most N pixels.")] = 512,
    style_size: Annotated[Optional[int], typer.Option(
        min=16, metavar="N", help="Resize the style so its shorter side is N pixels (default: the content's).")] = None,
    optimizer: Annotated[str, typer.Option(metavar="lbfgs|adam", help="L-BFGS (Gatys et al.) or Adam.")] = "lbfgs",
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Learning rate (default: 1 for L-BFGS, 0.02 for Adam).")] = None,
    content_layer: Annotated[str, typer.Option(metavar="LAYER", help="relu1_2, relu2_2, relu3_3 or relu4_3.")] = "relu2_2",
    content_weight: Annotated[float, typer.Option(min=0.0)] = 1.0,
    style_weight: Annotated[float, typer.Option(min=0.0)] = 50.0,
    tv_weight: Annotated[float, typer.Option(min=0.0, help="Total-variation smoothing weight.")] = 0.0,
    device: _Device = "auto",
    overwrite: _Overwrite = False,
) -> None:
    """Optimise the image itself under the VGG-16 content and style losses (Gatys et al.), starting from CONTENT.

    Slow (seconds to minutes), best quality: the yardstick for `evaluate`. A progress bar shows the losses.
    Exit status: 0 done, 1 failed, 2 usage error, 130 interrupted.

    [bold]Example[/bold]

      metastyle-batch optimize photo.jpg --style wave.jpg -o photo_gatys.png --steps 300
    """
    _guarded(_optimize, content, style, output, steps, size, style_size, optimizer, lr, content_layer,
                 content_weight, style_weight, tv_weight, device, overwrite)


def _optimize(content, style, output, steps, size, style_size, optimizer, lr, content_layer, content_weight,
              style_weight, tv_weight, device, overwrite) -> None:
    require_torch_option("optimize")
    import torch

    from ..model.vgg import STYLE_LAYERS, load_vgg
    from ..tensors import load_rgb_tensor, resize
    from ..train.gatys import OPTIMIZERS, image_losses
    from ..train.gatys import optimize as run_optimize

    optimizer = optimizer.lower()
    if optimizer not in OPTIMIZERS:
        _usage_error(f"--optimizer {optimizer!r}: use lbfgs or adam")
    if content_layer not in STYLE_LAYERS:
        _usage_error(f"--content-layer {content_layer!r}: use {', '.join(STYLE_LAYERS)}")
    src = _check_input(content, "content image")
    style_path = _check_input(style, "style image")
    dst = _check_output(output, [src, style_path], overwrite, (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"),
                        "the output image")
    _check_device(device)
    from ..tensors import pick_device

    dev = pick_device(device)
    c = resize(load_rgb_tensor(_read_rgb(src, "content image")), longer=size, mode="bicubic", upscale=False).to(dev)
    s = resize(load_rgb_tensor(_read_rgb(style_path, "style image")), shorter=style_size or min(c.shape[-2:]),
               mode="bicubic").to(dev)
    vgg = load_vgg(log=lambda m: typer.echo(m, err=True)).to(dev)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    err = _console()
    before = image_losses(vgg, c, c, s, content_layer=content_layer)
    t0 = time.perf_counter()
    with Progress(TextColumn("optimizing"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("content {task.fields[content]:.4g}  style {task.fields[style]:.4g}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=not err.is_terminal,
                  transient=True) as bar:
        task = bar.add_task("optimize", total=steps, content=before["content"], style=before["style"])

        def on_step(step: int, _img, losses: dict) -> None:
            bar.update(task, completed=step, content=losses["content"], style=losses["style"])

        try:
            img = run_optimize(vgg, c, s, steps, content_layer=content_layer, content_weight=content_weight,
                               style_weight=style_weight, lr=lr, on_step=on_step, optimizer=optimizer,
                               tv_weight=tv_weight)
        except torch.cuda.OutOfMemoryError:
            _fail(f"out of GPU memory at {c.shape[-1]}x{c.shape[-2]}; lower --size")
    after = image_losses(vgg, img, c, s, content_layer=content_layer)
    if not all(v == v for v in after.values()):
        _fail("the optimisation diverged (NaN losses); lower --lr or try --optimizer adam")
    _write(img.detach().float().cpu().clamp(0, 1)[0].permute(1, 2, 0).numpy(), dst, overwrite)
    typer.echo(f"Wrote {dst} ({img.shape[-1]}x{img.shape[-2]}, {steps} {optimizer} steps, "
               f"{time.perf_counter() - t0:.1f} s; content loss {before['content']:.4g} → {after['content']:.4g}, "
               f"style loss {before['style']:.4g} → {after['style']:.4g})", err=True)


# ------------------------------------------------------------------------------------------ finetune


def finetune(
    style: Annotated[str, typer.Option("--style", "-s", metavar="FILE", show_default=False, help="Style image.")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="NET", show_default=False,
                                         help="Network file to write (.safetensors, plus a .sha256 sidecar).")],
    content_dir: Annotated[Optional[Path], typer.Option(
        "--content", metavar="DIR", show_default=False,
        help="Folder of content photos to fine-tune on (default: the model's training content folder, if present).")] = None,
    steps: Annotated[int, typer.Option(min=0, metavar="N", help="Adam steps.")] = 500,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    batch: Annotated[Optional[int], typer.Option(min=1, metavar="N", help="Crops per step (default: the model's training batch).")] = None,
    crop: Annotated[Optional[int], typer.Option(min=16, metavar="N", help="Square crop size (default: the model's training crop).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the crops (the validation crops too).")] = 0,
    model: _Model = None,
    device: _Device = "auto",
    overwrite: _Overwrite = False,
) -> None:
    """Fine-tune the network the meta network generates for one style (Johnson et al.: one network per style).

    Starts from the generated TransformNet and optimises its weights with Adam on crops of the content folder,
    under the model's own training losses; reports the loss on fixed validation crops before and after.
    Exit status: 0 done, 1 failed, 2 usage error, 130 interrupted.

    [bold]Example[/bold]

      metastyle-batch finetune --style wave.jpg --content photos/ -o wave.safetensors --steps 1000
    """
    _guarded(_finetune, style, output, content_dir, steps, lr, batch, crop, seed, model, device, overwrite)


def _finetune(style, output, content_dir, steps, lr, batch, crop, seed, model, device, overwrite) -> None:
    require_torch_option("finetune")
    from ..train.finetune import finetune as run_finetune
    from ..train.finetune import save_net, training_config
    from ..train.data import list_images

    style_path = _check_input(style, "style image")
    dst = _check_output(output, [style_path], overwrite, (".safetensors",), "a network file")
    stylizer = _load_stylizer(model, device, torch=True)
    if content_dir is None:
        default = training_config(stylizer.info).get("content_dir")
        if not default or not Path(default).is_dir():
            _usage_error("give --content DIR (a folder of content photos to fine-tune on)")
        content_dir = Path(default)
    content_dir = content_dir.expanduser()
    if not content_dir.is_dir():
        _usage_error(f"--content {content_dir}: not a folder")
    try:
        list_images(content_dir)
    except FileNotFoundError:
        _usage_error(f"--content {content_dir}: folder has no images")
    _encode(stylizer, style_path)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    err = _console()
    with Progress(TextColumn("fine-tuning"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4g}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=not err.is_terminal,
                  transient=True) as bar:
        task = bar.add_task("finetune", total=steps, loss=float("nan"))
        result = run_finetune(stylizer, style_path, content_dir, steps, lr=lr, batch=batch, crop=crop, seed=seed,
                              progress=lambda i, n, loss: bar.update(task, completed=i, loss=loss))
    b, a = result.loss_before, result.loss_after
    if not all(v == v for v in a.values()):
        _fail("fine-tuning diverged (NaN loss); lower --lr")
    info = {"style": style_path.name, "model": stylizer.model_id, "steps": result.steps,
            "loss_before": b, "loss_after": a, **{k: v for k, v in result.config.items()}}
    try:
        save_net(result.params, dst, stylizer.meta.base, info, overwrite=overwrite)
    except OSError as exc:
        _fail(f"{output}: cannot write ({exc.strerror or exc})")
    typer.echo(f"Loss before {b['total']:.4g} (content {b['content']:.4g}, style {b['style']:.4g}), "
               f"after {a['total']:.4g} (content {a['content']:.4g}, style {a['style']:.4g})", err=True)
    typer.echo(f"Wrote {dst} ({result.steps} steps, {result.seconds:.1f} s)", err=True)


# ------------------------------------------------------------------------------------------ export


def export(
    output: Annotated[Path, typer.Option("--output", "-o", metavar="NET.onnx", show_default=False,
                                         help="ONNX file to write.")],
    style: Annotated[Optional[str], typer.Option("--style", "-s", metavar="FILE", show_default=False,
                                                 help="Style image: export the network generated for it.")] = None,
    net: Annotated[Optional[Path], typer.Option("--net", metavar="NET", show_default=False,
                                                help="Export a fine-tuned network file (from `finetune`) instead.")] = None,
    opset: Annotated[int, typer.Option(min=13, max=21, metavar="N", help="ONNX opset version.")] = 17,
    model: _Model = None,
    device: _Device = "auto",
    overwrite: _Overwrite = False,
) -> None:
    """Export the TransformNet generated for a style (or a fine-tuned --net) to ONNX.

    The graph takes 'image' (N, 3, H, W) float32 RGB in [0, 1], H and W multiples of 4, and returns 'stylized'
    (same shape, unclamped); batch, height and width are dynamic. ONNX Runtime's result on a 64x64 image is
    checked against the network computed layer by layer (the tiled path). Exit status: 0 done, 1 failed, 2 usage error, 130 interrupted.

    [bold]Example[/bold]

      metastyle-batch export --style wave.jpg -o wave.onnx
    """
    _guarded(_export, output, style, net, opset, model, device, overwrite)


def _export(output, style, net, opset, model, device, overwrite) -> None:
    import numpy as np

    from ..model.netfile import NetError, load_net_arrays, read_net_info
    from ..onnx_export import OrtNetwork, export_onnx_bytes
    from ..paths import atomic_write_bytes
    from ..tiled import run_tiled

    if (style is None) == (net is None):
        _usage_error("give either --style FILE or --net NET.safetensors")
    src = _check_input(style, "style image") if style is not None else _check_input(net, "network file")
    dst = _check_output(output, [src], overwrite, (".onnx",), "an ONNX file")
    if net is not None:
        try:
            base = read_net_info(src)["base"]
            params = load_net_arrays(src)
        except NetError as exc:
            _usage_error(_one_line(exc))
    else:
        stylizer = _load_stylizer(model, device)
        base = stylizer.meta.base
        params = stylizer.network(_encode(stylizer, src))
    data = export_onnx_bytes(params, base, opset)
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    ref = run_tiled(x, params, base, tile=32)
    diff = float(np.abs(OrtNetwork(data, threads=1).run(x) - ref).max())
    if not diff < 1e-2:
        _fail(f"the exported graph does not match the layer-by-layer network (max difference {diff:.3g}); "
              "nothing was written")
    try:
        atomic_write_bytes(dst, data)
    except OSError as exc:
        _fail(f"{output}: cannot write ({exc.strerror or exc})")
    typer.echo(f"Wrote {dst} ({len(data) / 1024:.0f} KiB, opset {opset}, checked with ONNX Runtime to {diff:.1g})",
               err=True)


# ------------------------------------------------------------------------------------------ texture


def _parse_size(value: str) -> tuple[int, int]:
    """'256' or '320x240' (W x H) → (H, W)."""
    try:
        parts = [int(p) for p in value.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 16 or max(parts) > 8192:
        _usage_error(f"--size {value!r}: give N or WxH, each 16 to 8192 pixels")
    return parts[1], parts[0]


def texture(
    output: Annotated[Path, typer.Option("--output", "-o", metavar="TEX", show_default=False,
                                         help="Output image (.png, .jpg, .webp, .tiff).")],
    style: Annotated[Optional[str], typer.Option("--style", "-s", metavar="FILE", show_default=False,
                                                 help="Style image whose network renders the texture.")] = None,
    random: Annotated[bool, typer.Option("--random", help="Draw a style from random hidden states instead of --style "
                                                          "(the paper's texture generation).")] = False,
    size: Annotated[str, typer.Option(metavar="N|WxH", help="Texture size in pixels.")] = "256",
    seed: Annotated[int, typer.Option(help="Seed of the noise (and of the random style).")] = 0,
    spread: Annotated[float, typer.Option(min=0.0, max=10.0, help="With --random: how far from the training styles' "
                                                                  "mean to draw, in standard deviations.")] = 1.0,
    model: _Model = None,
    device: _Device = "auto",
    overwrite: _Overwrite = False,
) -> None:
    """The paper's texture visualisation: run a style's generated network on Gaussian noise.

    With --random, the style itself is drawn at random: Gaussian style statistics around the training styles'
    mean go through the meta network's hidden layer (ReLU), giving a random hidden state and a new network.
    Exit status: 0 done, 1 failed, 2 usage error, 130 interrupted.

    [bold]Examples[/bold]

      metastyle-batch texture --style wave.jpg -o wave_texture.png --size 512

      metastyle-batch texture --random --seed 3 -o random3.png
    """
    _guarded(_texture, output, style, random, size, seed, spread, model, device, overwrite)


def _texture(output, style, random, size, seed, spread, model, device, overwrite) -> None:
    import numpy as np

    from ..model.meta_numpy import noise_image

    if random and style is not None:
        _usage_error("use either --style FILE or --random, not both")
    if not random and style is None:
        _usage_error("give a style: --style FILE, or --random for a random one")
    h, w = _parse_size(size)
    src = [_check_input(style, "style image")] if style is not None else []
    dst = _check_output(output, src, overwrite, (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"), "the output image")
    stylizer = _load_stylizer(model, device)
    code = stylizer.random_code(seed, spread) if random else _encode(stylizer, src[0])
    noise = np.ascontiguousarray(noise_image(h, w, seed).transpose(2, 0, 1))[None]
    y = stylizer.run_array(noise, stylizer.network(code))
    _write(y[0].transpose(1, 2, 0), dst, overwrite)
    what = f"random style (seed {seed})" if random else f"style {src[0].name}"
    typer.echo(f"Wrote {dst} ({w}x{h} texture, {what})", err=True)


# ------------------------------------------------------------------------------------------ interpolate


def interpolate(
    content: Annotated[Path, typer.Argument(metavar="CONTENT", show_default=False, help="Content image.")],
    style: Annotated[str, typer.Option("--style", "-s", metavar="A", show_default=False, help="First style image.")],
    to: Annotated[str, typer.Option("--to", metavar="B", show_default=False, help="Second style image.")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="GRID.png", show_default=False,
                                         help="The strip (PNG).")],
    steps: Annotated[int, typer.Option(min=2, max=64, metavar="N", help="Interpolation points, A and B included.")] = 5,
    size: Annotated[int, typer.Option(min=16, max=8192, metavar="N",
                                      help="Downscale the content so its longer side is at most N pixels.")] = 256,
    cell: Annotated[int, typer.Option(min=16, max=2048, metavar="N", help="Grid cell size in pixels.")] = 192,
    model: _Model = None,
    device: _Device = "auto",
    overwrite: _Overwrite = False,
) -> None:
    """The paper's Fig. 6: stylize CONTENT with N hidden states interpolated from style A to style B.

    Generated weights are linear in the hidden state, so each point is the network of a blended style. The strip
    shows style A, the N results and style B in one row. Exit status: 0 done, 1 failed, 2 usage error, 130 interrupted.

    [bold]Example[/bold]

      metastyle-batch interpolate photo.jpg --style wave.jpg --to scream.jpg --steps 6 -o strip.png
    """
    _guarded(_interpolate, content, style, to, output, steps, size, cell, model, device, overwrite)


def _interpolate(content, style, to, output, steps, size, cell, model, device, overwrite) -> None:
    import numpy as np

    from ..codes import mix
    from ..grid import save_grid
    from ..pixels import resize

    src = _check_input(content, "content image")
    a_path, b_path = _check_input(style, "style image"), _check_input(to, "--to style image")
    dst = _check_output(output, [src, a_path, b_path], overwrite, (".png",), "the grid")
    rgb = _read_rgb(src, "content image")
    if max(rgb.shape[:2]) > size:
        rgb = resize(rgb, longer=size, mode="bicubic")
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]
    a_img, b_img = (_read_rgb(p, "style image") for p in (a_path, b_path))
    stylizer = _load_stylizer(model, device)
    a, b = _encode(stylizer, a_path), _encode(stylizer, b_path)
    row = [a_img]
    for i in range(steps):
        t = i / (steps - 1)
        row.append(stylizer.run_array(x, stylizer.network(mix([a, b], [1 - t, t])))[0].transpose(1, 2, 0))
    row.append(b_img)
    try:
        save_grid([row], dst, cell=cell)
    except OSError as exc:
        _fail(f"{output}: cannot write ({exc.strerror or exc})")
    typer.echo(f"Wrote {dst} ({steps} interpolation steps from {a_path.name} to {b_path.name})", err=True)
