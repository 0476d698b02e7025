"""The app's response times, measured through its HTTP API as the page uses it (`metastyle-batch ui`).

    python benchmarks/ui.py            # shipped model, an empty cache, the example pictures

Starts the real server on a free port with a new, empty cache, then prints medians of: a new style's first
preview (VGG-16 reads the style), a cached style's preview, a slider move (new strength: the photo's own code is
cached, the network is new), and camera frames (a JPEG in, a JPEG out) at several sizes, with the frames/s one
frame in flight gives. The browser's own time is not included.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples/content/astronaut.jpg"
STYLES = sorted((REPO / "examples/style").glob("*.jpg"))


def post(url: str, data: bytes) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=300) as r:
        body = r.read()
    return body, time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "METASTYLE_CACHE": f"{tmp}/cache"}
        vgg = Path(os.environ.get("METASTYLE_VGG16", Path.home() / ".cache/metastyle-batch/vgg16_features23.safetensors"))
        if vgg.is_file():
            env["METASTYLE_VGG16"] = str(vgg)
        proc = subprocess.Popen([sys.executable, "-m", "metastyle_batch", "ui", "--no-open", "--port", "0",
                                 "--workdir", f"{tmp}/work"], stdout=subprocess.PIPE, text=True, env=env)
        try:
            url = proc.stdout.readline().strip()
            up = lambda kind, path: json.loads(post(f"{url}api/upload?kind={kind}&name={path.name}",
                                                    path.read_bytes())[0])["id"]
            photo = up("photo", PHOTO)
            styles = [up("style", s) for s in STYLES]

            def preview(style: str, strength: float) -> float:
                body = {"photo": photo, "look": {"styles": [[style, 1]], "strength": strength}, "size": 512}
                return post(f"{url}api/preview", json.dumps(body).encode())[1]

            first = [preview(s, 1.0) for s in styles]
            cached = [preview(styles[0], 1.0) for _ in range(5)]
            sliders = [preview(styles[0], 0.5 + 0.05 * i) for i in range(6)]
            print(f"new style, first preview (512 px):  {statistics.median(first) * 1000:6.0f} ms  (median of {len(first)})")
            print(f"cached style, preview:              {statistics.median(cached) * 1000:6.0f} ms")
            print(f"slider move (new strength):         {statistics.median(sliders) * 1000:6.0f} ms")
            look = json.dumps({"styles": [[styles[0], 1]]})
            for side in (160, 240, 320, 480, 640):
                frame = io.BytesIO()
                Image.open(PHOTO).convert("RGB").resize((side, side * 3 // 4)).save(frame, "JPEG", quality=85)
                times = [post(f"{url}api/frame?session=bench&look={urllib.request.quote(look)}", frame.getvalue())[1]
                         for _ in range(12)][2:]
                ms = statistics.median(times) * 1000
                print(f"camera frame {side}x{side * 3 // 4}:{'':<12}{ms:6.0f} ms  ({1000 / ms:5.1f} frames/s)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
