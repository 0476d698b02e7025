"""Robust image reading and writing shared by the CLI, batch runs, the watch daemon and the GIMP plug-in.

Everything here works on one in-memory form, :class:`Picture` (float32 RGB frames in [0, 1] with alpha
kept apart), so the model code never sees colour modes, palettes, EXIF rotation or bit depths.

Guarantees:

* Bad input raises :class:`ImageError` whose ``str()`` is ONE line, ``"<file>: <what is wrong>"``, so a
  caller can print it instead of a traceback. Nothing else escapes :func:`read_image` or :func:`write_image`.
* Inputs are only ever opened for reading.
* Outputs are encoded fully in memory, then written atomically (temp file in the same folder +
  ``os.replace``), so a crash never leaves a half-written image or a stray temp file.
* An existing output is never replaced unless ``overwrite=True``.

Known limits (Pillow's, kept deliberately simple):

* Pillow decodes 16-bit RGB/RGBA PNG and TIFF to 8 bits; such files read with ``bit_depth == 8``. Only
  16-bit *grayscale* (modes ``I;16*``/``I``/``F``) keeps its precision (``bit_depth == 16``).
* Pillow cannot write 16-bit RGB, so ``bit_depth == 16`` pictures are written as 16-bit grayscale
  PNG/TIFF when every frame is gray and has no alpha, and as 8-bit otherwise.
* Only GIF, WebP and APNG are read as animations; multi-page TIFF and MPO read their first image.
* ``max_pixels`` counts every frame; Pillow's own ``Image.MAX_IMAGE_PIXELS`` check (whose error limit
  is the default 178,956,970) still applies on top of it.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageSequence, UnidentifiedImageError

from . import memory
from .paths import atomic_path

from .errors import MetastyleError, OutputExistsError, check_output
from .formats import FORMAT_EXT, format_for_path, format_name

__all__ = ["ImageError", "Picture", "read_image", "encode_image", "write_image", "format_for_path", "format_name",
           "FORMAT_EXT"]

# zlib level 2: 3x faster than Pillow's default 6 for +5 % size on stylized photos (docs/BENCHMARKS.md)
PNG_LEVEL = 2
_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "bmp": "BMP", "gif": "GIF"}
_ALPHA_FORMATS = {"png", "webp", "tiff", "gif"}
_ANIMATED_FORMATS = {"png", "webp", "gif"}  # png means APNG
_ICC_FORMATS = {"png", "jpeg", "webp", "tiff"}
_SIXTEEN_BIT_FORMATS = {"png", "tiff"}
_HIGH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa"}
# EXIF orientation -> transpose that makes the pixels upright (same table as PIL.ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(MetastyleError):
    """A file could not be read or written; ``str(e)`` is one line, ``"<file>: <what is wrong>"``."""

    exit_code = 2


class ImageExistsError(ImageError, OutputExistsError):
    """The output image is already there (``overwrite`` was not given)."""


@dataclass
class Picture:
    """A decoded image: upright float32 RGB frames in [0, 1], with alpha kept apart so the model ignores it."""

    frames: list[np.ndarray]  # each HxWx3 float32 in [0, 1]
    alpha: list[np.ndarray | None]  # per frame HxW float32 in [0, 1], or None
    durations: list[int]  # ms per frame; one entry per frame, 0 when the source has none
    format: str  # source format, lower case ("png", "jpeg", ...)
    bit_depth: int  # 8 or 16
    icc_profile: bytes | None  # an RGB ICC profile describing the frames, or None (sRGB)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        height, width = self.frames[0].shape[:2]
        return width, height


# --------------------------------------------------------------------------------------------- reading


def read_style_bytes(path: Path) -> bytes:
    """A style image's file as bytes (hashed for the code cache, decoded on a miss), or a one-line error."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(str(path), "style image not found") from None
    except OSError as e:
        raise ImageError(str(path), f"cannot read style image ({e.strerror or e})") from None


def read_image(
    source: str | os.PathLike | bytes, name: str | None = None, *, max_pixels: int = 178_956_970
) -> Picture:
    """Decode a file path or in-memory bytes into a :class:`Picture`.

    ``name`` is what error messages call the input (default: the path, or ``"<bytes>"``). Images whose
    total pixel count (width x height x frames) exceeds ``max_pixels`` are refused from their header,
    before any pixel is decoded, to stop decompression bombs. EXIF orientation is applied to the pixels.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        data = bytes(source)
        if not data:
            raise ImageError(label, "empty input (0 bytes)")
        return _decode(io.BytesIO(data), label, max_pixels)

    path = Path(source)
    label = name or os.fspath(source)
    if isinstance(label, bytes):
        label = os.fsdecode(label)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(label, "is a directory, not an image file")
        if info.st_size == 0:
            raise ImageError(label, "empty file (0 bytes)")
        with open(path, "rb") as fp:
            return _decode(fp, label, max_pixels)
    except FileNotFoundError:
        raise ImageError(label, "no such file") from None
    except IsADirectoryError:
        raise ImageError(label, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(label, "permission denied") from None
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(label, f"cannot read file: {exc.strerror or exc}") from exc


def _decode(fp: io.IOBase, label: str, max_pixels: int) -> Picture:
    """Open with Pillow, check the size from the header, then decode every frame; all failures -> ImageError."""
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is the limit that matters; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                return _decode_open(im, label, max_pixels)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(label, f"image too large, refusing to decode (possible decompression bomb): {exc}") from exc
    except UnidentifiedImageError:
        raise ImageError(label, "not an image, or an unsupported image format") from None
    except MemoryError:
        raise ImageError(label, "not enough memory to decode this image") from None
    except Exception as exc:  # Pillow plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        message = str(exc) or type(exc).__name__
        if "truncated" in message.lower():
            raise ImageError(label, f"truncated image file ({message})") from exc
        raise ImageError(label, f"corrupt or unreadable image ({message})") from exc


def _decode_open(im: Image.Image, label: str, max_pixels: int) -> Picture:
    fmt = (im.format or "unknown").lower()
    fmt = {"mpo": "jpeg", "jpeg2000": "jp2"}.get(fmt, fmt)
    width, height = im.size
    n_frames = getattr(im, "n_frames", 1) if fmt in _ANIMATED_FORMATS else 1
    if width <= 0 or height <= 0:
        raise ImageError(label, f"invalid image size {width}x{height}")
    if width * height * n_frames > max_pixels:
        what = f"{width}x{height}" + (f"x{n_frames} frames" if n_frames > 1 else "")
        raise ImageError(
            label, f"image too large ({what} = {width * height * n_frames:,} pixels, limit {max_pixels:,}); "
            "refusing to decode (possible decompression bomb)"
        )
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        orientation = 1
    icc = im.info.get("icc_profile") or None
    transpose = _ORIENTATION.get(orientation)

    frames: list[np.ndarray] = []
    alpha: list[np.ndarray | None] = []
    durations: list[int] = []
    bit_depth = 8
    source = ImageSequence.Iterator(im) if n_frames > 1 else [im]
    for frame in source:
        rgb, a, depth, icc = _frame_to_arrays(frame, icc, transpose)
        frames.append(rgb)
        alpha.append(a)
        durations.append(int(round(frame.info.get("duration", 0) or 0)))  # known only after load()
        bit_depth = max(bit_depth, depth)
    if any(a is not None for a in alpha):  # GIF: first frame may be opaque, later ones not
        alpha = [np.ones(f.shape[:2], np.float32) if a is None else a for f, a in zip(frames, alpha)]
    if icc is not None and icc[16:20] != b"RGB ":  # gray/CMYK profiles do not describe RGB frames
        icc = None
    return Picture(frames, alpha, durations, fmt, bit_depth, icc)


def _frame_to_arrays(
    frame: Image.Image, icc: bytes | None, transpose: Image.Transpose | None
) -> tuple[np.ndarray, np.ndarray | None, int, bytes | None]:
    """One Pillow frame -> (HxWx3 float32, HxW alpha or None, bit depth, ICC profile still valid)."""
    frame.load()  # some plugins settle mode and info only on load
    mode = frame.mode
    if mode in _HIGH_MODES:  # 16-bit (or wider) grayscale: keep the precision
        img = frame.transpose(transpose) if transpose is not None else frame
        gray = np.asarray(img, dtype=np.float32)
        if mode != "F":
            gray = gray / np.float32(65535)
        gray = np.clip(np.nan_to_num(gray), 0.0, 1.0).astype(np.float32, copy=False)
        return np.repeat(gray[:, :, None], 3, axis=2), None, 16, icc

    if mode == "CMYK":
        frame, icc = _cmyk_to_rgb(frame, icc), None
    has_alpha = mode in _ALPHA_MODES or "transparency" in frame.info
    if not has_alpha and frame.width * frame.height * 12 > memory.SPILL_BYTES:
        return _huge_rgb(frame if transpose is None else frame.transpose(transpose)), None, 8, icc
    img = frame.convert("RGBA" if has_alpha else "RGB")
    if transpose is not None:
        img = img.transpose(transpose)
    arr = np.asarray(img, dtype=np.float32) / np.float32(255)
    if has_alpha:
        return np.ascontiguousarray(arr[:, :, :3]), np.ascontiguousarray(arr[:, :, 3]), 8, icc
    return arr, None, 8, icc


def _huge_rgb(frame: Image.Image) -> np.ndarray:
    """A frame too big to hold twice, converted to float RGB a band of rows at a time into :func:`memory.empty`
    (the same values as converting it whole)."""
    width, height = frame.size
    out = memory.empty((height, width, 3), np.float32)
    for rows in memory.bands(height, width * 12):
        band = out[rows]
        band[...] = np.asarray(frame.crop((0, rows.start, width, rows.stop)).convert("RGB"), dtype=np.float32)
        band /= np.float32(255)
    return out


def _cmyk_to_rgb(frame: Image.Image, icc: bytes | None) -> Image.Image:
    """CMYK -> sRGB through the embedded profile when there is one (print profiles differ a lot), else naively."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(frame, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # unusable profile: Pillow's plain formula is still far better than failing
            pass
    return frame.convert("RGB")


# --------------------------------------------------------------------------------------------- writing


def encode_image(picture: Picture, format: str, *, quality: int = 95) -> bytes:
    """Encode to bytes in ``format`` (png, jpeg/jpg, webp, tiff/tif, bmp, gif); errors name ``<output>``.

    Alpha is re-attached for png/webp/tiff/gif and flattened onto white otherwise. Several frames stay
    an animation for gif/webp/png (APNG); other formats get the first frame. The ICC profile is kept for
    png/jpeg/webp/tiff. No EXIF is written, so there is never a stale orientation tag. An alpha mask
    whose size differs from its frame (the frame was resized) is resized to match.
    """
    buffer = io.BytesIO()
    _encode(picture, format, buffer, quality)
    return buffer.getvalue()


def _encode(picture: Picture, format: str, fp, quality: int) -> None:
    """:func:`encode_image` into the binary file ``fp`` (a file on disk: a huge picture is never in memory twice)."""
    label = "<output>"
    fmt = format_name(format) or str(format).lower().lstrip(".")
    if fmt not in _PIL_NAMES:
        raise ImageError(label, f"unsupported output format {format!r}; use one of {', '.join(_PIL_NAMES)}")
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ImageError(label, f"quality must be an integer from 1 to 100, got {quality!r}")
    if not picture.frames:
        raise ImageError(label, "picture has no frames")

    count = len(picture.frames) if fmt in _ANIMATED_FORMATS else 1
    rgbs = [_as_rgb(f) for f in picture.frames[:count]]
    alphas = [_as_alpha(picture.alpha[i] if i < len(picture.alpha) else None, rgbs[i]) for i in range(count)]
    if fmt not in _ALPHA_FORMATS:
        rgbs = [rgb if a is None else rgb * a[:, :, None] + (1.0 - a[:, :, None]) for rgb, a in zip(rgbs, alphas)]
        alphas = [None] * count
    elif any(a is not None for a in alphas):
        alphas = [np.ones(r.shape[:2], np.float32) if a is None else a for r, a in zip(rgbs, alphas)]

    sixteen = (
        picture.bit_depth == 16 and fmt in _SIXTEEN_BIT_FORMATS and count == 1 and alphas[0] is None
        and np.array_equal(rgbs[0][:, :, 0], rgbs[0][:, :, 1]) and np.array_equal(rgbs[0][:, :, 0], rgbs[0][:, :, 2])
    )
    if sixteen:  # Pillow writes 16-bit only for grayscale (mode I;16)
        images = [Image.fromarray(np.round(np.clip(np.nan_to_num(rgbs[0][:, :, 0]), 0, 1) * 65535).astype(np.uint16))]
    else:
        images = [_to_8bit_image(rgb, a) for rgb, a in zip(rgbs, alphas)]

    options: dict = {}
    icc = picture.icc_profile
    if fmt in _ICC_FORMATS and icc and not sixteen:  # an RGB profile is invalid on grayscale data
        options["icc_profile"] = icc
    if fmt == "jpeg":
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "webp":
        options.update(quality=quality)
    elif fmt == "tiff":
        options.update(compression="tiff_deflate")
    elif fmt == "png":
        options.update(compress_level=PNG_LEVEL)
    if count > 1:
        durations = [int(picture.durations[i]) if i < len(picture.durations) else 0 for i in range(count)]
        options.update(save_all=True, append_images=images[1:], loop=0)
        if any(durations):
            options["duration"] = durations
        if fmt == "gif":
            options["disposal"] = 2  # clear each frame, so transparent areas do not show the previous one

    try:
        images[0].save(fp, _PIL_NAMES[fmt], **options)
    except OSError as exc:
        if getattr(exc, "errno", None) is not None:  # the file system's (no space left…), not the encoder's
            raise
        raise ImageError(label, f"cannot encode {fmt}: {exc or type(exc).__name__}") from exc
    except Exception as exc:
        raise ImageError(label, f"cannot encode {fmt}: {exc or type(exc).__name__}") from exc


def write_image(
    picture: Picture,
    dest: str | os.PathLike,
    *,
    format: str | None = None,
    overwrite: bool = False,
    quality: int = 95,
) -> Path:
    """Encode and write ``picture`` atomically to ``dest``, creating missing folders; returns the path.

    The format comes from ``format`` or else the extension. An existing ``dest`` is an error unless
    ``overwrite``; every failure is an :class:`ImageError` naming ``dest`` and leaves no temp file.
    Writing to stdout (``"-"``) is the caller's job, via :func:`encode_image`.
    """
    path = Path(dest)
    label = os.fspath(dest)
    fmt = format or format_for_path(path)
    if fmt is None:
        raise ImageError(label, f"unknown image extension {path.suffix!r}; name a format or use .png/.jpg/.webp/.tiff")
    check_output(path, overwrite, ImageExistsError, ImageError)
    folder = path.parent
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise ImageError(label, f"cannot write: {os.fspath(folder)!r} is not a folder")
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fp:
            _encode(picture, fmt, fp, quality)
    except ImageError as exc:
        raise ImageError(label, exc.reason) from exc
    except PermissionError:
        raise ImageError(label, "cannot write: permission denied (is the folder read-only?)") from None
    except OSError as exc:
        raise ImageError(label, f"cannot write: {exc.strerror or exc}") from exc
    return path


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    """Any HxW, HxWx1 or HxWx3 array -> HxWx3 float32 (not copied when it is one already)."""
    arr = np.asarray(frame, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ImageError("<output>", f"frame must be HxW or HxWx3, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr  # NaN and the range are settled a block at a time when it is written (_to_8bit_image)


def _as_alpha(alpha: np.ndarray | None, rgb: np.ndarray) -> np.ndarray | None:
    """Alpha as HxW float32 in [0, 1], resized to the frame if the frame was resized without it."""
    if alpha is None:
        return None
    arr = np.clip(np.nan_to_num(np.asarray(alpha, dtype=np.float32)), 0.0, 1.0)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ImageError("<output>", f"alpha must be HxW, got shape {arr.shape}")
    if arr.shape != rgb.shape[:2]:
        arr = np.asarray(Image.fromarray(arr).resize((rgb.shape[1], rgb.shape[0]), Image.Resampling.BILINEAR))
    return arr


def _to_8bit_image(rgb: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    """Float RGB (NaN as 0, clipped to [0, 1]) and alpha → an 8-bit Pillow image, filled a band of rows at a time
    (no float or 8-bit copy of a whole big frame besides Pillow's own)."""
    height, width = rgb.shape[:2]
    image = Image.new("RGB" if alpha is None else "RGBA", (width, height))
    for rows in memory.bands(height, width * 16):
        block = rgb[rows] if alpha is None else np.dstack([rgb[rows], alpha[rows]])
        block = np.clip(np.nan_to_num(block), 0.0, 1.0)
        image.paste(Image.fromarray(np.rint(block * 255).astype(np.uint8)), (0, rows.start))
    return image
