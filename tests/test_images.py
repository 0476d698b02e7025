"""metastyle_batch.images: every case uses a small file generated here with Pillow/numpy."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from metastyle_batch.errors import OutputExistsError
from metastyle_batch.images import ImageError, Picture, encode_image, format_for_path, read_image, write_image

RNG = np.random.default_rng(1234)


def _check_error(excinfo: pytest.ExceptionInfo, name: str | os.PathLike, *words: str) -> None:
    """The error is one line, names the file and says what is wrong."""
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{os.fspath(name)}: ")
    for word in words:
        assert word in message.lower(), message


def _save(img: Image.Image, path: Path, fmt: str | None = None, **options) -> Path:
    img.save(path, fmt, **options)
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge image, with almost no pixel data: a decompression bomb stand-in."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _picture(frame: np.ndarray, alpha: np.ndarray | None = None, **fields) -> Picture:
    defaults = dict(durations=[0], format="png", bit_depth=8, icc_profile=None)
    defaults.update(fields)
    return Picture([frame], [alpha], **defaults)


@pytest.fixture
def photo() -> np.ndarray:
    """Smooth 8-bit RGB content (JPEG-friendly)."""
    y, x = np.mgrid[0:48, 0:64]
    return np.dstack([x * 4, y * 5, (x + y) * 2]).clip(0, 255).astype(np.uint8)


@pytest.fixture
def jpeg_file(tmp_path: Path, photo: np.ndarray) -> Path:
    return _save(Image.fromarray(photo), tmp_path / "photo.jpg", quality=95)


# ----------------------------------------------------------------------------------------- bad input


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as excinfo:
        read_image(path)
    _check_error(excinfo, path, "empty")


def test_truncated_jpeg(tmp_path: Path, jpeg_file: Path) -> None:
    data = jpeg_file.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as excinfo:
        read_image(path)
    _check_error(excinfo, path, "truncated")


def test_text_file_renamed_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(ImageError) as excinfo:
        read_image(path)
    _check_error(excinfo, path, "not an image")


def test_decompression_bomb_over_pillow_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(20000, 20000))  # 400 Mpx claimed, ~100 bytes on disk
    assert path.stat().st_size < 1000
    with pytest.raises(ImageError) as excinfo:
        read_image(path)
    _check_error(excinfo, path, "decompression bomb")


def test_decompression_bomb_own_limit_without_warning(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(10000, 10000))  # 100 Mpx: Pillow only warns, our limit refuses
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked DecompressionBombWarning would fail here
        with pytest.raises(ImageError) as excinfo:
            read_image(path, max_pixels=50_000_000)
    _check_error(excinfo, path, "too large", "10000x10000")


def test_small_max_pixels_refuses_real_image(jpeg_file: Path) -> None:
    with pytest.raises(ImageError) as excinfo:
        read_image(jpeg_file, max_pixels=64 * 48 - 1)
    _check_error(excinfo, jpeg_file, "too large")
    assert read_image(jpeg_file, max_pixels=64 * 48).size == (64, 48)


def test_animation_frames_count_towards_max_pixels(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), (i * 80, 0, 0)) for i in range(3)]
    path = _save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError) as excinfo:
        read_image(path, max_pixels=299)
    _check_error(excinfo, path, "3 frames")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError) as excinfo:
        read_image(path)
    _check_error(excinfo, path, "no such file")


def test_directory_passed_as_file(tmp_path: Path) -> None:
    path = tmp_path / "folder.png"
    path.mkdir()
    with pytest.raises(ImageError) as excinfo:
        read_image(str(path))
    _check_error(excinfo, path, "directory")


def test_bytes_input_uses_name_in_errors(jpeg_file: Path) -> None:
    picture = read_image(jpeg_file.read_bytes(), name="<stdin>")
    assert picture.format == "jpeg" and picture.size == (64, 48)
    with pytest.raises(ImageError) as excinfo:
        read_image(b"", name="<stdin>")
    _check_error(excinfo, "<stdin>", "empty")
    with pytest.raises(ImageError) as excinfo:
        read_image(b"garbage" * 10)
    _check_error(excinfo, "<bytes>", "not an image")


def test_inputs_never_modified(tmp_path: Path, jpeg_file: Path) -> None:
    before = (hashlib.sha256(jpeg_file.read_bytes()).hexdigest(), jpeg_file.stat().st_mtime_ns)
    picture = read_image(jpeg_file)
    write_image(picture, tmp_path / "out.png")
    with pytest.raises(ImageError):
        write_image(picture, jpeg_file)  # same path, no overwrite
    assert (hashlib.sha256(jpeg_file.read_bytes()).hexdigest(), jpeg_file.stat().st_mtime_ns) == before


# ------------------------------------------------------------------------------------ colour modes


def test_rgb_png_roundtrip_exact(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    picture = read_image(_save(Image.fromarray(pixels), tmp_path / "in.png"))
    assert picture.format == "png" and picture.bit_depth == 8 and picture.size == (23, 17)
    assert picture.frames[0].dtype == np.float32 and picture.frames[0].shape == (17, 23, 3)
    assert picture.alpha == [None] and picture.durations == [0]
    out = write_image(picture, tmp_path / "out.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), pixels)


def test_16bit_grayscale_png_keeps_precision(tmp_path: Path) -> None:
    values = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 53 % 65536).astype(np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    picture = read_image(path)
    assert picture.bit_depth == 16
    frame = picture.frames[0]
    assert frame.shape == (30, 40, 3) and frame.dtype == np.float32
    np.testing.assert_allclose(frame[:, :, 1], values / 65535, atol=1e-6)
    assert len(np.unique(frame)) > 256  # more levels than 8 bits could hold

    out = write_image(picture, tmp_path / "deep_out.png")
    with Image.open(out) as img:
        assert img.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(img).astype(np.uint16), values)
    with Image.open(write_image(picture, tmp_path / "deep_out.tiff")) as img:
        np.testing.assert_array_equal(np.asarray(img).astype(np.uint16), values)


def test_16bit_colour_falls_back_to_8bit_png(tmp_path: Path) -> None:
    frame = RNG.random((8, 9, 3), dtype=np.float32)
    out = write_image(_picture(frame, bit_depth=16), tmp_path / "colour16.png")
    with Image.open(out) as img:
        assert img.mode == "RGB"
        np.testing.assert_allclose(np.asarray(img) / 255, frame, atol=0.5 / 255 + 1e-6)


def test_grayscale_l_and_la(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    picture = read_image(_save(Image.fromarray(gray), tmp_path / "l.png"))
    assert picture.alpha == [None] and picture.bit_depth == 8
    for c in range(3):
        np.testing.assert_allclose(picture.frames[0][:, :, c], gray / 255, atol=1e-6)

    alpha = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    la = Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)])
    picture = read_image(_save(la, tmp_path / "la.png"))
    np.testing.assert_allclose(picture.alpha[0], alpha / 255, atol=1e-6)
    np.testing.assert_allclose(picture.frames[0][:, :, 0], gray / 255, atol=1e-6)


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (253 * 3))
    img.paste(2, (0, 0, 4, 8))
    path = _save(img, tmp_path / "pal.png", transparency=2)
    picture = read_image(path)
    alpha, rgb = picture.alpha[0], picture.frames[0]
    assert alpha is not None
    assert (alpha[:, :4] == 0).all() and (alpha[:, 4:] == 1).all()
    np.testing.assert_allclose(rgb[0, 6], [1, 0, 0])


@pytest.mark.parametrize("ext", ["png", "webp", "tiff", "gif"])
def test_rgba_alpha_reattached_on_write(tmp_path: Path, ext: str) -> None:
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[..., 0], pixels[..., 3] = 200, 255
    pixels[:, :8, 3] = 0  # left half fully transparent (binary, so GIF can keep it too)
    picture = read_image(_save(Image.fromarray(pixels), tmp_path / "in.png"))
    np.testing.assert_array_equal(picture.alpha[0], pixels[..., 3] / 255)

    again = read_image(write_image(picture, tmp_path / f"out.{ext}", quality=100))
    assert again.alpha[0] is not None
    np.testing.assert_allclose(again.alpha[0], pixels[..., 3] / 255, atol=0.02)
    np.testing.assert_allclose(again.frames[0][:, 8:, 0], 200 / 255, atol=0.03)


def test_jpeg_drops_alpha_by_flattening_on_white(tmp_path: Path) -> None:
    frame = np.zeros((16, 16, 3), np.float32)  # black
    alpha = np.zeros((16, 16), np.float32)
    alpha[:, 8:] = 1.0
    out = write_image(_picture(frame, alpha), tmp_path / "flat.jpg")
    with Image.open(out) as img:
        assert img.mode == "RGB"
        pixels = np.asarray(img).astype(int)
    assert (pixels[:, :6] > 240).all() and (pixels[:, 10:] < 15).all()


def test_cmyk_jpeg_converted_to_correct_rgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (32, 32), (0, 128, 255, 64))
    cmyk.paste((255, 0, 0, 0), (0, 0, 16, 32))  # pure cyan on the left
    path = _save(cmyk, tmp_path / "print.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    picture = read_image(path)
    assert picture.format == "jpeg" and picture.icc_profile is None
    rgb = picture.frames[0] * 255
    # (1 - c)(1 - k): cyan -> (0, 255, 255); (0, 128, 255, 64) -> (191, 95, 0)
    np.testing.assert_allclose(rgb[16, 4], [0, 255, 255], atol=8)
    np.testing.assert_allclose(rgb[16, 28], [191, 95, 0], atol=8)


def test_exif_orientation_applied_and_not_written(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)  # landscape as stored: red top-left corner on blue
    stored[...] = (0, 0, 255)
    stored[:10, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(Image.fromarray(stored), tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)

    picture = read_image(path)
    assert picture.size == (20, 40)  # upright: portrait
    frame = picture.frames[0]
    np.testing.assert_allclose(frame[2, 17], [1, 0, 0], atol=0.05)  # stored top-left -> top-right
    np.testing.assert_allclose(frame[35, 2], [0, 0, 1], atol=0.05)

    out = write_image(picture, tmp_path / "upright.jpg")
    with Image.open(out) as img:
        assert img.size == (20, 40)
        assert img.getexif().get(0x0112) is None


# --------------------------------------------------------------------------------------- animation


@pytest.fixture
def animated_gif(tmp_path: Path) -> Path:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (12, 10), c) for c in colours]
    return _save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:],
                 duration=[40, 80, 120], loop=0)


@pytest.mark.parametrize("ext", ["gif", "webp"])
def test_animated_gif_read_and_rewritten(tmp_path: Path, animated_gif: Path, ext: str) -> None:
    picture = read_image(animated_gif)
    assert picture.format == "gif" and len(picture.frames) == 3
    assert picture.durations == [40, 80, 120]
    np.testing.assert_allclose(picture.frames[1][5, 5], [0, 1, 0], atol=0.01)

    again = read_image(write_image(picture, tmp_path / f"out.{ext}"))
    assert again.format == ext and len(again.frames) == 3
    assert again.durations == [40, 80, 120]
    np.testing.assert_allclose(again.frames[2][5, 5], [0, 0, 1], atol=0.05)


def test_still_format_gets_first_frame(tmp_path: Path, animated_gif: Path) -> None:
    with Image.open(write_image(read_image(animated_gif), tmp_path / "first.jpg")) as img:
        assert getattr(img, "n_frames", 1) == 1
        np.testing.assert_allclose(np.asarray(img)[5, 5], [255, 0, 0], atol=8)


# ------------------------------------------------------------------------------------------ writing


def test_unicode_paths(tmp_path: Path, photo: np.ndarray) -> None:
    src = _save(Image.fromarray(photo), tmp_path / "ünïcødé 图片.png")
    out = write_image(read_image(src), tmp_path / "输出 ördner" / "ünïcødé 图片.webp")
    assert out.exists() and read_image(out).size == (64, 48)
    with pytest.raises(ImageError) as excinfo:
        read_image(tmp_path / "fehlt 图片.png")
    _check_error(excinfo, tmp_path / "fehlt 图片.png", "no such file")


def test_missing_output_folder_created(tmp_path: Path, photo: np.ndarray) -> None:
    dest = tmp_path / "a" / "b" / "out.png"
    assert write_image(_picture(photo / 255.0), dest) == dest
    assert dest.is_file() and os.listdir(dest.parent) == ["out.png"]


def test_existing_dest_needs_overwrite(tmp_path: Path, photo: np.ndarray) -> None:
    dest = tmp_path / "out.png"
    dest.write_bytes(b"keep me")
    with pytest.raises(ImageError) as excinfo:
        write_image(_picture(photo / 255.0), dest)
    _check_error(excinfo, dest, "exists")
    assert isinstance(excinfo.value, OutputExistsError) and "--" not in str(excinfo.value)  # the CLI adds the flag
    assert dest.read_bytes() == b"keep me"
    write_image(_picture(photo / 255.0), dest, overwrite=True)
    assert read_image(dest).size == (64, 48)
    assert os.listdir(tmp_path) == ["out.png"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_folder(tmp_path: Path, photo: np.ndarray) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ImageError) as excinfo:
            write_image(_picture(photo / 255.0), folder / "out.png")
        _check_error(excinfo, folder / "out.png", "permission denied")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


def test_write_failure_is_one_line_and_leaves_no_temp_file(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)  # fails after the temp file was written
    dest = tmp_path / "out" / "x.png"
    with pytest.raises(ImageError) as excinfo:
        write_image(_picture(photo / 255.0), dest)
    _check_error(excinfo, dest, "permission denied")
    assert os.listdir(tmp_path / "out") == []


def test_output_folder_is_a_file(tmp_path: Path, photo: np.ndarray) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for dest in (blocker / "out.png", blocker / "deeper" / "out.png"):
        with pytest.raises(ImageError) as excinfo:
            write_image(_picture(photo / 255.0), dest)
        _check_error(excinfo, dest, "cannot write")
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


def test_unknown_format_and_bad_quality(tmp_path: Path, photo: np.ndarray) -> None:
    picture = _picture(photo / 255.0)
    with pytest.raises(ImageError) as excinfo:
        write_image(picture, tmp_path / "out.xyz")
    _check_error(excinfo, tmp_path / "out.xyz", "unknown image extension")
    with pytest.raises(ImageError) as excinfo:
        write_image(picture, tmp_path / "out.png", format="heic")
    _check_error(excinfo, tmp_path / "out.png", "unsupported")
    with pytest.raises(ImageError) as excinfo:
        encode_image(picture, "jpeg", quality=0)
    _check_error(excinfo, "<output>", "quality")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", ["png", "jpeg", "jpg", "webp", "tiff", "bmp", "gif"])
def test_encode_image_every_format(fmt: str, photo: np.ndarray) -> None:
    data = encode_image(_picture(photo / 255.0), fmt)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == {"jpg": "JPEG"}.get(fmt, fmt.upper())
        assert img.size == (64, 48)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "tiff"])
def test_icc_profile_kept(tmp_path: Path, photo: np.ndarray, ext: str) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = _save(Image.fromarray(photo), tmp_path / "tagged.png", icc_profile=icc)
    picture = read_image(src)
    assert picture.icc_profile == icc
    with Image.open(write_image(picture, tmp_path / f"out.{ext}")) as img:
        assert img.info.get("icc_profile") == icc


def test_resized_frame_gets_alpha_resized(photo: np.ndarray) -> None:
    alpha = np.ones((8, 8), np.float32)
    data = encode_image(_picture(photo / 255.0, alpha), "png")
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "RGBA" and img.size == (64, 48)


def test_format_for_path() -> None:
    assert format_for_path("a/b.JPG") == "jpeg"
    assert format_for_path(Path("x.jpeg")) == "jpeg"
    assert format_for_path("x.tif") == "tiff"
    assert format_for_path("x.webp") == "webp"
    assert format_for_path("x.png") == "png"
    assert format_for_path("x.txt") is None
    assert format_for_path("noext") is None
