"""What the UI does, as library calls: previews, camera frames, photo renders and video renders.

Everything goes through the same engine and functions as the CLI (``stylize_picture``, ``write_image``,
``stylize_video``), so a download has the CLI's pixels for the same settings.
"""

from __future__ import annotations

import io
import math
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import pixels
from ..codes import StyleCode, mix, normalized
from ..color import PALETTE_STRENGTH
from ..errors import MetastyleError
from ..formats import FORMAT_EXT, format_name
from .jobs import Job
from .workspace import RequestError, Workspace

PREVIEW_SIDES = (128, 2048)  # the range a preview's longer side may ask for
FRAME_MAX_PIXELS = 1280 * 720  # camera frames are small; a bigger one is a mistake or an attack


@dataclass(frozen=True)
class Look:
    """Styles with weights (normalised like ``--mix``), strength, palette and colour keeping."""

    styles: tuple[tuple[str, float], ...]
    strength: float = 1.0
    palette: float = PALETTE_STRENGTH
    preserve_color: bool = False

    @classmethod
    def parse(cls, data: object) -> "Look":
        """The page's JSON, checked: a bad value is a one-line :class:`RequestError`."""
        if not isinstance(data, dict):
            raise RequestError("the look must be a JSON object")
        styles = data.get("styles")
        if not isinstance(styles, list) or not styles:
            raise RequestError("add a style image first")
        pairs = []
        for item in styles:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise RequestError("styles must be [id, weight] pairs")
            pairs.append((item[0], _number(item[1], "style weight", 0.0, 1e6)))
        try:
            weights = normalized([w for _, w in pairs])
        except ValueError:
            raise RequestError("every style weight is 0; give at least one style some weight") from None
        return cls(tuple((s, w) for (s, _), w in zip(pairs, weights)),
                   _number(data.get("strength", 1.0), "strength", 0.0, 1.0),
                   _number(data.get("palette", PALETTE_STRENGTH), "palette", 0.0, 1.0),
                   bool(data.get("preserve_color", False)))


def _number(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{what} must be a number, got {value!r}")
    if not low <= value <= high:
        raise RequestError(f"{what} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


class Studio:
    """One engine for every request; small caches for what a moving slider asks again and again."""

    def __init__(self, stylizer, workspace: Workspace) -> None:
        self.stylizer, self.workspace = stylizer, workspace
        self._lock = threading.Lock()
        self._small: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # (photo, side) → preview-size photo
        self._own: OrderedDict[tuple, StyleCode] = OrderedDict()  # the content's own code, for strength < 1
        self._styles: dict[str, StyleCode] = {}  # upload id → code

    # ---- codes ---------------------------------------------------------------------------------------------
    def style_code(self, look: Look) -> StyleCode:
        """The blend of the look's styles, as the engine's ``blend`` makes it."""
        return mix([self._style(s) for s, _ in look.styles], [w for _, w in look.styles])

    def _style(self, upload_id: str) -> StyleCode:
        """An uploaded style's code, kept by upload id (an upload never changes), so a camera frame does not read
        and hash the style file again to find it in the engine's cache."""
        with self._lock:
            if upload_id in self._styles:
                return self._styles[upload_id]
        code = self.stylizer.encode(self.workspace.get(upload_id, "style").path)
        with self._lock:
            self._styles[upload_id] = code
        return code

    def _own_code(self, key: tuple, content: np.ndarray) -> StyleCode:
        with self._lock:
            if key in self._own:
                return self._own[key]
        code = self.stylizer.encode_array(content)
        with self._lock:
            self._own[key] = code
            while len(self._own) > 32:
                self._own.popitem(last=False)
        return code

    def _frame_code(self, look: Look, content: np.ndarray, key: tuple) -> StyleCode:
        code = self.style_code(look)
        if look.strength < 1.0:
            code = self.stylizer.with_strength(code, self._own_code(key, content), look.strength)
        return code

    # ---- quick results -------------------------------------------------------------------------------------
    def preview(self, photo_id: str, look: Look, side: int) -> tuple[bytes, dict]:
        """The photo at reduced size (longer side ``side``), stylized, as JPEG; with what it took."""
        if not isinstance(side, int) or not PREVIEW_SIDES[0] <= side <= PREVIEW_SIDES[1]:
            raise RequestError(f"preview size must be an integer from {PREVIEW_SIDES[0]} to {PREVIEW_SIDES[1]}")
        t0 = time.perf_counter()
        small = self._small_photo(photo_id, side)
        code = self._frame_code(look, small, (photo_id, side))
        out = self.stylizer.stylize(small, code, preserve_color=look.preserve_color, palette=look.palette)
        ms = (time.perf_counter() - t0) * 1000
        return jpeg(out, 90), {"ms": round(ms), "width": small.shape[1], "height": small.shape[0]}

    def _small_photo(self, photo_id: str, side: int) -> np.ndarray:
        key = (photo_id, side)
        with self._lock:
            if key in self._small:
                return self._small[key]
        from ..images import read_image

        rgb = read_image(self.workspace.get(photo_id, "photo").path).frames[0]
        if max(rgb.shape[:2]) > side:
            rgb = pixels.resize(rgb, longer=side, mode="bicubic")
        with self._lock:
            self._small[key] = rgb
            while len(self._small) > 16:
                self._small.popitem(last=False)
        return rgb

    def frame(self, data: bytes, look: Look, session: str) -> bytes:
        """One camera frame (JPEG or PNG bytes) stylized, as JPEG. Strength is resolved on the first frame of
        each look of a camera session, as a video resolves it on its first frame, so the picture does not flicker."""
        rgb = decode_small(data)
        code = self._frame_code(look, rgb, ("camera", session[:64], look))
        return jpeg(self.stylizer.stylize(rgb, code, preserve_color=look.preserve_color, palette=look.palette), 80)

    # ---- renders -------------------------------------------------------------------------------------------
    def render_photos(self, job: Job, photo_ids: list[str], look: Look, fmt: str | None) -> Path:
        """Every photo at full size into the job's folder (one bad photo does not stop the rest); one file, or a
        zip of several."""
        from ..images import read_image, write_image

        photos = [self.workspace.get(p, "photo") for p in photo_ids]
        code = self.style_code(look)
        folder = self.workspace.job_folder(job.id)
        written: list[Path] = []
        for i, photo in enumerate(photos):
            try:
                picture = read_image(photo.path, photo.name)
                out_fmt = fmt or (picture.format if picture.format in FORMAT_EXT else "png")
                out = self.stylizer.stylize_picture(picture, code, look.strength, look.preserve_color,
                                                    palette=look.palette)
                dest = _unique(folder / f"{Path(photo.name).stem}_stylized{FORMAT_EXT[out_fmt]}")
                written.append(write_image(out, dest, format=out_fmt))
            except MetastyleError as exc:
                job.failures.append(str(exc))
            job.progress(i + 1)
        if not written:
            raise RequestError("no photo could be stylized: " + "; ".join(job.failures))
        if len(written) == 1:
            return written[0]
        archive = folder / "stylized.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:  # images are compressed already
            for path in written:
                z.write(path, path.name)
        return archive

    def render_video(self, job: Job, video_id: str, look: Look, to: str | None) -> Path:
        """The clip through :func:`~metastyle_batch.video.stylize_video` (audio kept): the look for the whole
        clip, or a transition from it to the style ``to``."""
        from ..video import fixed_style, stylize_video, transition

        clip = self.workspace.get(video_id, "video")
        start = self.style_code(look)
        keys = fixed_style(start) if to is None else transition(start, self.workspace.get(to, "style").path)
        dest = self.workspace.job_folder(job.id) / f"{Path(clip.name).stem}_stylized.mp4"
        stylize_video(self.stylizer, clip.path, dest, keys, strength=look.strength,
                      preserve_color=look.preserve_color, palette=look.palette, progress=job.progress)
        return dest

    @staticmethod
    def output_format(value: object) -> str | None:
        """``None`` (each photo's own format) or a format we write."""
        if value in (None, "", "same"):
            return None
        fmt = format_name(str(value))
        if fmt is None:
            raise RequestError(f"unknown output format {value!r}; use png, jpeg, webp or tiff")
        return fmt


def _unique(path: Path) -> Path:
    n = 1
    while path.exists():
        n += 1
        path = path.with_name(f"{path.stem.rsplit('~', 1)[0]}~{n}{path.suffix}")
    return path


def decode_small(data: bytes) -> np.ndarray:
    """A camera frame's bytes → float RGB, refusing what is not a small JPEG/PNG (checked from the header)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ("JPEG", "PNG", "WEBP"):
                raise RequestError(f"a camera frame must be JPEG, PNG or WebP, not {im.format}")
            if im.width * im.height > FRAME_MAX_PIXELS:
                raise RequestError(f"a camera frame of {im.width}x{im.height} is too big (at most 1280x720)")
            return np.asarray(im.convert("RGB"), np.float32) / 255.0
    except RequestError:
        raise
    except Exception as exc:
        raise RequestError(f"cannot decode the camera frame ({type(exc).__name__})") from None


def jpeg(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
