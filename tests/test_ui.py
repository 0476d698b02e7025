"""`metastyle-batch ui` in a real browser: Debian's Chromium driven by Playwright, against the real server.

The server is the real command (`python -m metastyle_batch ui`) with the shipped model. The tests upload through
the page's own file inputs, move its sliders, render, download, and compare the downloads with the CLI's files;
the camera tab runs on Chromium's fake camera fed by a generated clip. Screenshots of every tab are kept in
``test-artifacts/ui/`` (``$METASTYLE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metastyle_batch.video import ffmpeg_exe, probe

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "metastyle-base8.safetensors"
PHOTOS = [ROOT / "examples/content/astronaut.jpg", ROOT / "examples/content/coffee.jpg"]
STYLES = [ROOT / "examples/style/liberty_island.jpg", ROOT / "examples/style/two_brothers_riders.jpg"]
ARTIFACTS = Path(os.environ.get("METASTYLE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MAX_UPLOAD_MB = 3

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium (apt-get install chromium); CI installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def cli(*args) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "metastyle_batch", *map(str, args)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "METASTYLE_MODEL": str(SHIPPED)})
    assert res.returncode == 0, res.stderr
    return res


def pixels(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        return np.asarray(im.convert("RGB"), np.int16)


def frames(path: Path) -> np.ndarray:
    info = probe(path)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3).astype(np.int16)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real `ui` command on a free port; yields its address, then checks that it stops cleanly."""
    work = tmp_path_factory.mktemp("ui-work")
    proc = subprocess.Popen([sys.executable, "-m", "metastyle_batch", "ui", "--no-open", "--port", "0",
                             "--workdir", str(work), "--max-upload-mb", str(MAX_UPLOAD_MB), "--model", str(SHIPPED)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), (url, proc.stderr.read() if proc.poll() is not None else "")
    yield {"url": url, "work": work}
    proc.terminate()
    assert proc.wait(timeout=30) in (0, 130), proc.stderr.read()
    leftovers = [p for p in work.rglob("*") if p.name.startswith(".")]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory) -> Path:
    """A short Y4M clip, which Chromium's fake camera plays in a loop."""
    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15:duration=2",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def browser(fake_camera):
    if CHROMIUM is None:
        pytest.fail("CI must run the browser tests: install Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={fake_camera}"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 860})
    context.grant_permissions(["camera"], origin=server["url"].rstrip("/"))
    page = context.new_page()
    page.goto(server["url"])
    page.wait_for_selector("body[data-ready='1']")
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def render_and_download(page, button: str, link: str, tab: str, dest: Path) -> Path:
    """Click a render button, wait for its job's download link, keep a screenshot, and save the download."""
    page.click(button)
    link = page.locator(link)
    link.wait_for(state="visible", timeout=180_000)
    shot(page, tab)
    with page.expect_download() as info:
        link.click()
    info.value.save_as(dest)
    return dest


def add_styles(page, styles) -> None:
    page.set_input_files("#style-input", [str(s) for s in styles])
    page.wait_for_function(f"document.querySelectorAll('#styles li').length === {len(styles)}")


def test_photos_preview_render_download_match_cli(page, tmp_path):
    add_styles(page, STYLES[:1])
    folder = tmp_path / "shoot"  # a folder of photos, with a file that is not one
    folder.mkdir()
    for p in PHOTOS:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not a photo")
    page.set_input_files("#folder-input", str(folder))
    page.wait_for_function("Number(document.getElementById('preview').dataset.count) >= 1", timeout=30_000)
    assert page.locator("#photos li").count() == 2
    assert re.search(r"Style codes cached: [1-9]", page.inner_text("#cache"))

    page.locator("#strength").fill("0.7")  # a slider move: the preview follows
    page.wait_for_function("JSON.parse(document.getElementById('preview').dataset.look || '{}').strength === 0.7")
    assert "0.70" in page.inner_text("output[for=strength]")
    assert re.search(r"Preview 512x\d+ in \d+ ms", page.inner_text("#preview-info"))
    page.select_option("#format", "png")
    archive = render_and_download(page, "#render", "#render-download", "photos", tmp_path / "download.zip")

    cli("image", *PHOTOS, "-s", STYLES[0], "--strength", "0.7", "-f", "png", "-o", f"{tmp_path}/cli/")
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["astronaut_stylized.png", "coffee_stylized.png"]
        for name in z.namelist():
            ours, theirs = pixels(z.read(name)), pixels(tmp_path / "cli" / name.replace("_stylized", ""))
            assert ours.shape == theirs.shape
            assert np.abs(ours - theirs).max() <= 1, name


def test_bad_uploads_are_reported_and_the_server_goes_on(page, server, tmp_path):
    broken = PHOTOS[0].read_bytes()[:2000]  # a truncated JPEG
    page.set_input_files("#photo-input", files=[{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": broken}])
    message = page.locator("#message")
    message.wait_for(state="visible")
    assert "broken.jpg" in message.inner_text()
    shot(page, "bad-upload")
    page.set_input_files("#photo-input", [str(PHOTOS[0])])  # the next good one works
    page.wait_for_function("document.querySelectorAll('#photos li').length === 1")

    url = server["url"]

    def status(path: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
        request = urllib.request.Request(url.rstrip("/") + path, data=data, headers=headers or {},
                                         method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    # an upload over the limit is refused from its declared length, before its body is read
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", "/api/upload?kind=photo&name=big.jpg")
    conn.putheader("Content-Length", str(MAX_UPLOAD_MB * 2**20 + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "upload limit" in response.read().decode()
    conn.close()
    assert status("/api/upload?kind=video&name=clip.mp4", b"not a video at all")[0] == 400
    assert status("/api/upload?kind=../../x&name=a.png", PHOTOS[0].read_bytes())[0] == 400
    code, text = status("/api/preview", json.dumps({"photo": "../../../etc/passwd", "look": {"styles": [["x", 1]]}}).encode())
    assert code == 404 and "passwd" in text and not any(p.name == "passwd" for p in server["work"].rglob("*"))
    assert status("/api/preview", b"{not json")[0] == 400
    look = {"styles": [["0123456789abcdef", 1]], "strength": float("nan")}
    assert status("/api/frame?look=" + urllib.request.quote(json.dumps(look)), b"\xff\xd8junk")[0] == 400
    assert status("/api/upload?kind=photo&name=a.jpg", PHOTOS[0].read_bytes(), {"Origin": "http://evil.example"})[0] == 403
    assert status("/api/state", headers={"Host": "evil.example"})[0] == 400  # DNS rebinding
    assert status("/api/jobs/nope/download")[0] == 404
    code, text = status("/api/state")
    assert code == 200 and json.loads(text)["model"]
    names = {p.name for p in server["work"].rglob("*") if p.is_file()}
    assert not any("passwd" in n or n.startswith(".") for n in names), names


def test_camera_stylizes_live_frames_and_switches_styles(page):
    add_styles(page, STYLES[:1])
    page.click("#tab-camera")
    page.click("#camera-start")
    stats = page.locator("#camera-stats")
    page.wait_for_function("Number(document.getElementById('camera-stats').dataset.frames) >= 5", timeout=60_000)
    assert float(stats.get_attribute("data-fps")) > 0
    assert re.search(r"[\d.]+ frames/s at \d+×\d+", stats.inner_text())
    # the picture on the canvas is the stylized frame, not the camera's own
    diff = page.evaluate("""() => {
        const out = document.getElementById('camera-out'), video = document.getElementById('camera-video');
        const c = document.createElement('canvas'); c.width = out.width; c.height = out.height;
        c.getContext('2d').drawImage(video, 0, 0, c.width, c.height);
        const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const b = out.getContext('2d').getImageData(0, 0, out.width, out.height).data;
        let sum = 0, spread = 0; for (let i = 0; i < a.length; i += 4) { sum += Math.abs(a[i] - b[i]); spread += b[i]; }
        return {diff: sum / (a.length / 4), mean: spread / (a.length / 4)};
    }""")
    assert diff["diff"] > 10 and 5 < diff["mean"] < 250, diff
    before = int(stats.get_attribute("data-frames"))
    add_styles(page, STYLES)  # a second style joins the mix while the camera runs
    page.locator("#styles li input[type=range]").first.fill("0.3")
    page.wait_for_function(f"Number(document.getElementById('camera-stats').dataset.frames) >= {before + 5}",
                           timeout=60_000)
    shot(page, "camera")
    page.click("#camera-stop")


def test_video_tab_renders_a_transition_with_audio(page, tmp_path):
    clip = tmp_path / "clip.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=192x108:rate=12:duration=1",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-shortest", str(clip)], check=True)
    add_styles(page, STYLES)
    page.locator("#styles li input[type=range]").nth(1).fill("0")  # start: the first style alone
    page.click("#tab-video")
    page.set_input_files("#video-input", str(clip))
    page.wait_for_function("document.getElementById('video-info').textContent.includes('with sound')")
    page.select_option("#video-to", label=STYLES[1].name)
    ours = render_and_download(page, "#video-render", "#video-download", "video", tmp_path / "ui.mp4")
    cli("video", clip, "-s", STYLES[0], "--to", STYLES[1], "-o", tmp_path / "cli.mp4")
    got, want = probe(ours), probe(clip)
    assert (got.frames, got.width, got.height, got.has_audio) == (want.frames, want.width, want.height, True)
    a, b = frames(ours), frames(tmp_path / "cli.mp4")
    assert a.shape == b.shape and np.abs(a - b).mean() < 1.0


def test_a_streamed_upload_stops_at_the_limit(tmp_path):
    """A body without a declared length (chunked) is cut off at the limit; nothing of it stays on disk."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from metastyle_batch.ui.workspace import RequestError, Workspace

    workspace = Workspace(tmp_path / "w", max_upload=1000)

    async def chunks(n: int):
        for _ in range(n):
            yield b"x" * 300

    def receive(n: int, name: str):  # on a thread of its own: Playwright's loop may be running on this one
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, workspace.receive(chunks(n), "photo", name)).result()

    with pytest.raises(RequestError) as refused:
        receive(4, "../../big.png")
    assert refused.value.status == 413 and "big.png" in str(refused.value)
    with pytest.raises(RequestError, match="not an image"):
        receive(3, "small.png")
    assert [p for p in (tmp_path / "w").rglob("*") if p.is_file()] == []


def test_unusable_working_folder_or_port_is_one_line_and_exit_2(tmp_path):
    import socket

    (tmp_path / "a_file").write_text("not a folder")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, needle in ((["--workdir", tmp_path / "a_file", "--port", "0"], "is a file, not a folder"),
                             (["--port", port, "--workdir", tmp_path / "w"], f"cannot listen on 127.0.0.1:{port}")):
            res = subprocess.run([sys.executable, "-m", "metastyle_batch", "ui", "--no-open", *map(str, args)],
                                 capture_output=True, text=True, timeout=120)
            lines = res.stderr.strip().splitlines()
            assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], res.stderr
    assert not (tmp_path / "w").exists()
