"""The watch-folder daemon with the real watchdog observer on temporary folders: bursts, slow writers, corrupt
files, kill -9 and restart, style changes, OUT inside IN, the journal's crash recovery and the CLI shell."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from metastyle_batch import watch as watch_mod
from metastyle_batch.cli import app
from metastyle_batch.engine import Stylizer
from metastyle_batch.images import ImageError, read_image
from metastyle_batch.watch import (
    JOURNAL_NAME, FolderSpec, Journal, WatchDaemon, WatchError, daemon_running, folder_status, is_candidate,
    load_config, output_path,
)

from conftest import make_rgb, save_rgb

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
try:  # written by another change; the daemon records videos as unsupported without it
    from metastyle_batch import video as video_mod

    HAVE_VIDEO = callable(getattr(video_mod, "stylize_video", None))
except Exception:
    video_mod, HAVE_VIDEO = None, False


@pytest.fixture(autouse=True)
def _gentle(vgg16_path: Path):
    """Style encoding needs VGG-16; one torch thread (the machine is shared with training, and several
    threads on a busy CPU make tiny images hundreds of times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    logger = logging.getLogger("metastyle_batch.watch")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    yield
    torch.set_num_threads(threads)
    logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate  # the CLI installs its own


@pytest.fixture(scope="module")
def stylizer(vgg16_path: Path) -> Stylizer:
    return Stylizer(device="cpu")


# ------------------------------------------------------------------------------------------ helpers


def wait_until(predicate, timeout: float = 30.0, what: str = "condition", interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def journal_rows(out: Path) -> dict[str, dict]:
    """Rows keyed by the input's file name (relative to its IN)."""
    journal = Journal(out / JOURNAL_NAME, create=False)
    try:
        return {str(Path(r["path"]).relative_to(r["in_dir"])): dict(r) for r in journal.rows()}
    finally:
        journal.close()


def statuses(out: Path) -> dict[str, str]:
    if not (out / JOURNAL_NAME).is_file():
        return {}
    return {k: r["status"] for k, r in journal_rows(out).items()}


def visible_files(folder: Path) -> set[str]:
    """Every file under ``folder`` (relative), hidden ones included, minus the journal's own files."""
    if not folder.is_dir():
        return set()
    found = set()
    for p in folder.rglob("*"):
        if p.is_file() and not p.name.startswith(JOURNAL_NAME):
            found.add(str(p.relative_to(folder)))
    return found


def noisy_png(path: Path, side: int = 96, seed: int = 0) -> bytes:
    """An incompressible PNG (~side² × 3 bytes), so a slow copy takes several chunks."""
    rgb = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def png_bytes(seed: int, side: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_rgb(side, side, seed)).save(buf, "PNG")
    return buf.getvalue()


@contextmanager
def running(folders, stylizer, **kw):
    """A WatchDaemon (real observer) in a background thread; stopped and checked on exit."""
    kw.setdefault("settle", 0.3)
    kw.setdefault("retry_delay", 0.05)
    kw.setdefault("rescan", 0)
    daemon = WatchDaemon(folders, stylizer, **kw)
    errors: list[BaseException] = []

    def target():
        try:
            daemon.run()
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_until(lambda: daemon.running.is_set() or errors, 60, "the daemon to start")
    try:
        yield daemon
    finally:
        daemon.stop()
        thread.join(30)
        assert not thread.is_alive(), "the daemon did not stop"
        if errors:
            raise errors[0]


def spec(tmp_path: Path, style: Path, out: Path | None = None, **kw) -> FolderSpec:
    (tmp_path / "in").mkdir(exist_ok=True)
    return FolderSpec(in_dir=tmp_path / "in", out_dir=out or tmp_path / "out", style=style, **kw)


# ------------------------------------------------------------------------------------------ live daemon


def test_burst_of_50_files_each_processed_once_and_junk_ignored(tmp_path, stylizer, style_image):
    s = spec(tmp_path, style_image)
    inbox = s.in_dir
    with running([s], stylizer):
        for i in range(50):
            (inbox / f"img{i:02d}.png").write_bytes(png_bytes(i, 24))
        (inbox / "sub").mkdir()
        (inbox / "sub" / "deep.png").write_bytes(png_bytes(99, 24))
        for junk in (".hidden.png", "copy.png.part", "~lock.png", "dl.png.crdownload", "x.png.tmp", "#auto#"):
            (inbox / junk).write_bytes(png_bytes(1, 24))
        (inbox / ".cache").mkdir()
        (inbox / ".cache" / "thumb.png").write_bytes(png_bytes(2, 24))
        wait_until(lambda: list(statuses(s.out_dir).values()).count("done") == 51, 60, "51 outputs")
        time.sleep(0.5)  # a moment longer: nothing else may show up
    rows = journal_rows(tmp_path / "out")
    expected = {f"img{i:02d}.png" for i in range(50)} | {"sub/deep.png"}
    assert set(rows) == expected
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in rows.values())
    assert visible_files(tmp_path / "out") == expected  # exactly one output each, no temp files
    out = read_image(tmp_path / "out" / "img07.png")
    assert out.size == (24, 24)


def test_slowly_written_files_are_read_only_when_complete(tmp_path, stylizer, style_image):
    """One writer keeps the file open between chunks (like cp), one re-opens it per chunk (close-write events
    in between): neither is read half-written."""
    s = spec(tmp_path, style_image)
    data_a, data_b = noisy_png(tmp_path, seed=1), noisy_png(tmp_path, seed=2)
    chunks = 6
    step_a, step_b = -(-len(data_a) // chunks), -(-len(data_b) // chunks)
    with running([s], stylizer, settle=0.8, close_settle=0.6):
        with open(s.in_dir / "slow.png", "wb") as fa:
            for i in range(chunks):
                fa.write(data_a[i * step_a:(i + 1) * step_a])
                fa.flush()
                with open(s.in_dir / "reopened.png", "ab") as fb:
                    fb.write(data_b[i * step_b:(i + 1) * step_b])
                time.sleep(0.3)
        wait_until(lambda: list(statuses(s.out_dir).values()).count("done") == 2, 30, "both outputs")
    rows = journal_rows(s.out_dir)
    for name, data in (("slow.png", data_a), ("reopened.png", data_b)):
        assert rows[name]["attempts"] == 1 and rows[name]["error"] is None
        assert rows[name]["sha256"] == hashlib.sha256(data).hexdigest()  # read whole, in one go
        assert read_image(s.out_dir / name).size == (96, 96)


def test_corrupt_file_is_recorded_moved_and_the_daemon_goes_on(tmp_path, stylizer, style_image):
    s = spec(tmp_path, style_image, failed_dir=tmp_path / "failed")
    good = png_bytes(3)
    truncated = png_bytes(4, 64)[:300]
    with running([s], stylizer, settle=0.2) as daemon:
        (s.in_dir / "bad.png").write_bytes(b"this is not a picture at all" * 20)
        (s.in_dir / "half.png").write_bytes(truncated)
        (s.in_dir / "notes.txt").write_text("hello")
        (s.in_dir / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
        wait_until(lambda: len(statuses(s.out_dir)) == 4, 30, "four files judged")
        (s.in_dir / "good.png").write_bytes(good)  # after the failures: the daemon still works
        wait_until(lambda: statuses(s.out_dir).get("good.png") == "done", 30, "good.png")
        live = folder_status(daemon.specs[0])
        assert live["daemon_pid"] == os.getpid()
    rows = journal_rows(s.out_dir)
    assert rows["bad.png"]["status"] == "failed" and rows["half.png"]["status"] == "failed"
    assert rows["bad.png"]["error"].startswith("bad.png: ") and "\n" not in rows["bad.png"]["error"]
    assert "truncated" in rows["half.png"]["error"] or "corrupt" in rows["half.png"]["error"]
    assert rows["notes.txt"]["status"] == "unsupported"
    failed = ["bad.png", "half.png"]
    if HAVE_VIDEO:  # a broken video is the file's fault: failed at once, no retries
        assert rows["clip.mp4"]["status"] == "failed" and rows["clip.mp4"]["attempts"] == 1
        failed.insert(1, "clip.mp4")
    else:
        assert rows["clip.mp4"]["status"] == "unsupported" and "video" in rows["clip.mp4"]["error"]
    assert sorted(os.listdir(tmp_path / "failed")) == failed  # moved away, bytes intact
    assert (tmp_path / "failed" / "half.png").read_bytes() == truncated
    assert visible_files(s.out_dir) == {"good.png"}

    result = runner.invoke(app, ["watch", str(s.in_dir), "--out", str(s.out_dir), "--status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["folders"][0]
    assert (report["done"], report["failed"], report["pending"]) == (1, len(failed), 0)
    assert report["daemon_pid"] is None
    text = runner.invoke(app, ["watch", str(s.in_dir), "--out", str(s.out_dir), "--status"])
    assert text.exit_code == 0 and f"failed {len(failed)}" in text.stdout and "bad.png: " in text.stdout


def test_style_change_is_used_for_new_files(tmp_path, stylizer, style_image, style_image2):
    style = tmp_path / "style.png"
    shutil.copyfile(style_image, style)
    s = spec(tmp_path, style)
    save_rgb(tmp_path / "a.png", 40, 40, seed=5)
    save_rgb(tmp_path / "b.png", 40, 40, seed=6)
    with running([s], stylizer, settle=0.2):
        shutil.copyfile(tmp_path / "a.png", s.in_dir / "a.png")
        wait_until(lambda: statuses(s.out_dir).get("a.png") == "done", 30, "a.png")
        tmp = tmp_path / ".style.png.new"
        shutil.copyfile(style_image2, tmp)
        os.replace(tmp, style)  # the user replaces the style image while the daemon runs
        shutil.copyfile(tmp_path / "b.png", s.in_dir / "b.png")
        wait_until(lambda: statuses(s.out_dir).get("b.png") == "done", 30, "b.png")
    rows = journal_rows(s.out_dir)
    assert rows["a.png"]["style_sha"] == hashlib.sha256(style_image.read_bytes()).hexdigest()
    assert rows["b.png"]["style_sha"] == hashlib.sha256(style_image2.read_bytes()).hexdigest()
    content = read_image(tmp_path / "b.png").frames[0]
    got = read_image(s.out_dir / "b.png").frames[0]
    with_new = stylizer.stylize(content, style_image2)
    with_old = stylizer.stylize(content, style_image)
    assert np.abs(got - with_new).max() <= 1.5 / 255  # 8-bit rounding only
    assert np.abs(got - with_old).max() > 10 / 255


def test_out_inside_in_does_not_loop(tmp_path, stylizer, style_image):
    s = spec(tmp_path, style_image, out=tmp_path / "in" / "styled")
    with running([s], stylizer, settle=0.2):
        for i in range(3):
            (s.in_dir / f"p{i}.png").write_bytes(png_bytes(10 + i))
        wait_until(lambda: list(statuses(s.out_dir).values()).count("done") == 3, 30, "3 outputs")
        time.sleep(1.0)  # outputs landing inside IN must not be picked up
    assert set(journal_rows(s.out_dir)) == {"p0.png", "p1.png", "p2.png"}
    assert visible_files(s.out_dir) == {"p0.png", "p1.png", "p2.png"}
    assert not (s.out_dir / "styled").exists()
    assert not is_candidate(s.resolved(), s.out_dir.resolve() / "p0.png")


@pytest.mark.skipif(not HAVE_VIDEO, reason="metastyle_batch.video is not available")
def test_video_files_are_stylized_too(tmp_path, stylizer, style_image):
    s = spec(tmp_path, style_image)
    subprocess.run([video_mod.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=10",
                    "-frames:v", "5", "-pix_fmt", "yuv420p", str(s.in_dir / "clip.mp4")], check=True, timeout=60)
    (s.in_dir / "old.avi").write_bytes(b"RIFF" + b"\0" * 40)  # broken: failed, and named .mp4 if it had worked
    summary = WatchDaemon([s], stylizer, settle=0).run(once=True)
    assert (summary.done, summary.failed) == (1, 1)
    assert visible_files(tmp_path / "out") == {"clip.mp4"}
    info = video_mod.probe(tmp_path / "out" / "clip.mp4")
    assert (info.frames, info.width, info.height) == (5, 32, 24)
    assert output_path(s.resolved(), s.in_dir.resolve() / "old.avi").name == "old.mp4"


# ------------------------------------------------------------------------------------------ kill -9, SIGTERM


def _daemon_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "metastyle_batch", "watch", *map(str, args)]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200")


def test_kill_9_mid_backlog_then_restart_loses_and_duplicates_nothing(tmp_path, style_image):
    inbox, out = tmp_path / "in", tmp_path / "out"
    names = [f"k{i:02d}.png" for i in range(40)] + [f"sub/k{i}.png" for i in range(4)]
    for i, name in enumerate(names):
        save_rgb(inbox / name, 64, 64, seed=i)
    log1, log2 = tmp_path / "run1.log", tmp_path / "run2.log"
    with open(log1, "w") as err:
        proc = subprocess.Popen(_daemon_cmd(inbox, "--out", out, "--style", style_image, "--settle", "0.2"),
                                stdout=subprocess.DEVNULL, stderr=err, env=_env())
    try:
        done = lambda: [n for n in visible_files(out) if not n.endswith(".part")]  # noqa: E731
        wait_until(lambda: proc.poll() is not None or len(done()) >= 3, 90, "the first outputs", interval=0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, log1.read_text()
    before = {name: (out / name).stat().st_ino for name in visible_files(out) if not name.endswith(".part")}
    assert 3 <= len(before) < len(names), "the kill should land mid-backlog"

    with open(log2, "w") as err:
        rc = subprocess.run(_daemon_cmd(inbox, "--out", out, "--style", style_image, "--settle", "0.2", "--once"),
                            stdout=subprocess.DEVNULL, stderr=err, env=_env(), timeout=180).returncode
    text1, text2 = log1.read_text(), log2.read_text()
    assert rc == 0, text2
    assert visible_files(out) == set(names)  # one output per input, no temp/partial file left anywhere
    for name, ino in before.items():
        assert (out / name).stat().st_ino == ino, f"{name} was written again after the restart"
    rows = journal_rows(out)
    assert set(rows) == set(names) and all(r["status"] == "done" for r in rows.values())
    for name in names:
        assert read_image(out / name).size == (64, 64)
    # Exactly once: outputs published before the kill were never written again (same inode, above), and the
    # restart wrote each missing one exactly once. (Run 1's log is no evidence: the kill may land between
    # the journal's "done" and the log line.)
    assert set(re.findall(r"in: (\S+) -> ", text1)) <= set(before)
    again = re.findall(r"in: (\S+) -> ", text2)
    assert sorted(again) == sorted(set(names) - set(before)), text2
    assert not set(re.findall(r"in: (\S+) was finished before", text2)) - set(before)


def test_sigterm_stops_cleanly_and_releases_the_journal(tmp_path, style_image):
    inbox, out = tmp_path / "in", tmp_path / "out"
    save_rgb(inbox / "first.png", 32, 32, seed=1)
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(_daemon_cmd(inbox, "--out", out, "--style", style_image, "--settle", "0.2"),
                                stdout=subprocess.DEVNULL, stderr=err, env=_env())
    try:
        wait_until(lambda: proc.poll() is not None or (out / "first.png").exists(), 90, "the backlog")
        save_rgb(inbox / "second.png", 32, 32, seed=2)  # arrives while it runs
        wait_until(lambda: proc.poll() is not None or (out / "second.png").exists(), 30, "the live file")
        assert daemon_running(out / JOURNAL_NAME) == proc.pid
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc == 0, text
    assert "SIGTERM: stopping" in text and "Stopped: 2 done" in text and "Traceback" not in text
    assert daemon_running(out / JOURNAL_NAME) is None


# ------------------------------------------------------------------------------------------ journal logic


def test_restart_settles_each_crash_state(tmp_path, stylizer, style_image):
    """The three places a crash can hit (see the module docstring), made by editing the journal."""
    s = spec(tmp_path, style_image)
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        (s.in_dir / name).write_bytes(png_bytes(20 + i))
    assert WatchDaemon([s], stylizer, settle=0).run(once=True).done == 3
    out, journal = tmp_path / "out", Journal(tmp_path / "out" / JOURNAL_NAME)
    inode = {n: (out / n).stat().st_ino for n in ("a.png", "b.png", "c.png")}
    try:
        key = str(out.resolve())
        path = {n: str((s.in_dir / n).resolve()) for n in inode}
        # a: crashed after the rename, before "done": output is new -> finished, not redone
        journal._exec("UPDATE files SET status='processing', prev_ident=NULL WHERE folder=? AND path=?", (key, path["a.png"]))
        # b: crashed before the rename, output never appeared -> redone
        (out / "b.png").unlink()
        journal._exec("UPDATE files SET status='processing' WHERE folder=? AND path=?", (key, path["b.png"]))
        # c: crashed before the rename while an older output sat there -> redone, output replaced
        journal._exec("UPDATE files SET status='processing', prev_ident=? WHERE folder=? AND path=?",
                      (watch_mod.file_ident(out / "c.png"), key, path["c.png"]))
        (out / ".c.png.abc123_z.part").write_bytes(b"half")  # the temp file such a crash leaves
    finally:
        journal.close()
    summary = WatchDaemon([s], stylizer, settle=0).run(once=True)
    assert (summary.recovered, summary.done) == (1, 2)
    assert (out / "a.png").stat().st_ino == inode["a.png"]
    assert (out / "c.png").stat().st_ino != inode["c.png"]
    assert visible_files(out) == {"a.png", "b.png", "c.png"}
    rows = journal_rows(out)
    assert all(r["status"] == "done" for r in rows.values())
    assert (rows["b.png"]["attempts"], rows["c.png"]["attempts"]) == (2, 2)


def test_poison_file_that_keeps_killing_the_daemon_is_given_up(tmp_path, stylizer, style_image):
    s = spec(tmp_path, style_image)
    (s.in_dir / "p.png").write_bytes(png_bytes(1))
    WatchDaemon([s], stylizer, settle=0).run(once=True)
    journal = Journal(tmp_path / "out" / JOURNAL_NAME)
    journal._exec("UPDATE files SET status='processing', attempts=4, prev_ident=out_ident")
    journal.close()
    summary = WatchDaemon([s], stylizer, settle=0, retries=3).run(once=True)
    assert summary.done == 0
    row = journal_rows(tmp_path / "out")["p.png"]
    assert row["status"] == "failed" and "stopped 4 times" in row["error"]


def test_recopied_identical_file_is_recognised_and_changed_file_redone(tmp_path, stylizer, style_image):
    s = spec(tmp_path, style_image)
    src = s.in_dir / "photo.png"
    src.write_bytes(png_bytes(30))
    WatchDaemon([s], stylizer, settle=0).run(once=True)
    out = tmp_path / "out" / "photo.png"
    first = out.read_bytes(), out.stat().st_ino

    tmp = tmp_path / "copy.png"  # the same bytes copied in again: new inode and mtime
    tmp.write_bytes(png_bytes(30))
    os.utime(tmp, (time.time() - 100, time.time() - 100))
    os.replace(tmp, src)
    summary = WatchDaemon([s], stylizer, settle=0).run(once=True)
    assert (summary.done, summary.unchanged) == (0, 1)
    assert out.stat().st_ino == first[1]
    summary = WatchDaemon([s], stylizer, settle=0).run(once=True)  # now fully settled: not even read
    assert (summary.done, summary.unchanged) == (0, 0)

    src.write_bytes(png_bytes(31))  # new content under the same name: processed again, output replaced
    os.utime(src, (time.time() - 100, time.time() - 100))
    assert WatchDaemon([s], stylizer, settle=0).run(once=True).done == 1
    assert out.read_bytes() != first[0] and out.stat().st_ino != first[1]
    row = journal_rows(tmp_path / "out")["photo.png"]
    assert row["sha256"] == hashlib.sha256(png_bytes(31)).hexdigest() and row["attempts"] == 1


def test_transient_write_errors_are_retried_with_backoff(tmp_path, stylizer, style_image, monkeypatch):
    s = spec(tmp_path, style_image)
    (s.in_dir / "x.png").write_bytes(png_bytes(40))
    (s.in_dir / "y.png").write_bytes(png_bytes(41))
    real, calls = watch_mod.write_image, []

    def flaky(picture, dest, **kw):
        calls.append(Path(dest).name)
        if Path(dest).name == "y.png" or calls.count("x.png") == 1:  # x fails once, y always
            raise ImageError(str(dest), "cannot write: No space left on device")
        return real(picture, dest, **kw)

    monkeypatch.setattr(watch_mod, "write_image", flaky)
    summary = WatchDaemon([s], stylizer, settle=0, retries=2, retry_delay=0.01).run(once=True)
    assert (summary.done, summary.failed) == (1, 1)
    rows = journal_rows(tmp_path / "out")
    assert rows["x.png"]["status"] == "done" and rows["x.png"]["attempts"] == 2
    assert rows["y.png"]["status"] == "failed" and rows["y.png"]["attempts"] == 3
    assert "No space left on device (after 3 attempts)" in rows["y.png"]["error"]
    assert calls.count("y.png") == 3


def test_a_second_daemon_on_the_same_journal_is_refused(tmp_path, stylizer, style_image):
    s = spec(tmp_path, style_image)
    first = WatchDaemon([s], stylizer)
    first.acquire()
    try:
        second = WatchDaemon([s], stylizer)
        with pytest.raises(WatchError, match="another watch daemon"):
            second.acquire()
    finally:
        first.close()


def test_output_names_and_candidates(tmp_path, style_image):
    s = spec(tmp_path, style_image, format="jpg").resolved()
    assert output_path(s, s.in_dir / "a" / "b.png") == s.out_dir / "a" / "b.jpg"
    assert output_path(s, s.in_dir / "c.JPEG") == s.out_dir / "c.JPEG"  # already that format: spelling kept
    keep = spec(tmp_path, style_image).resolved()
    assert output_path(keep, keep.in_dir / "d.webp") == keep.out_dir / "d.webp"
    assert is_candidate(keep, keep.in_dir / "sub" / "e.png")
    assert not is_candidate(spec(tmp_path, style_image, recursive=False).resolved(), keep.in_dir / "sub" / "e.png")
    for junk in (".x.png", "x.png~", "x.part", "~$x.png", ".git/x.png", "x.crdownload", "Thumbs.db"):
        assert not is_candidate(keep, keep.in_dir / junk), junk
    with pytest.raises(WatchError, match="must differ"):
        FolderSpec(tmp_path / "in", tmp_path / "in", style_image).resolved()
    with pytest.raises(WatchError, match="must not be inside OUT"):
        FolderSpec(tmp_path / "in", tmp_path, style_image).resolved()
    with pytest.raises(WatchError, match="style image not found"):
        FolderSpec(tmp_path / "in", tmp_path / "o", tmp_path / "nope.png").resolved()


# ------------------------------------------------------------------------------------------ config + CLI


def test_config_with_two_folders_runs_once_from_the_cli(tmp_path, style_image, style_image2):
    for i in range(2):
        save_rgb(tmp_path / "drop1" / f"a{i}.png", 40, 56, seed=i)
        save_rgb(tmp_path / "drop2" / f"b{i}.png", 40, 56, seed=10 + i)
    cfg = tmp_path / "watch.toml"
    cfg.write_text(f"""
settle = 0.1
[[folder]]
name = "one"
in = "drop1"
out = "out1"
style = "{style_image}"

[[folder]]
name = "two"
in = "drop2"
out = "drop2/styled"
style = "{style_image2}"
format = "jpg"
max-side = 28
preserve_color = true
""")
    result = runner.invoke(app, ["watch", "--config", str(cfg), "--once"])
    assert result.exit_code == 0, result.output
    assert visible_files(tmp_path / "out1") == {"a0.png", "a1.png"}
    assert visible_files(tmp_path / "drop2" / "styled") == {"b0.jpg", "b1.jpg"}
    assert read_image(tmp_path / "drop2" / "styled" / "b0.jpg").size == (28, 20)
    status = runner.invoke(app, ["watch", "--config", str(cfg), "--status", "--json"])
    assert status.exit_code == 0, status.output
    report = {f["name"]: f for f in json.loads(status.stdout)["folders"]}
    assert (report["one"]["done"], report["two"]["done"], report["two"]["pending"]) == (2, 2, 0)


def test_config_and_cli_errors_are_one_line(tmp_path, style_image):
    def one_error(*args) -> str:
        result = runner.invoke(app, ["watch", *map(str, args)])
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
        return lines[0]

    (tmp_path / "in").mkdir()
    assert "--out" in one_error(tmp_path / "in")
    assert "--style" in one_error(tmp_path / "in", "--out", tmp_path / "o")
    assert "does not exist" in one_error(tmp_path / "nope", "--out", tmp_path / "o", "--style", style_image)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[folder]]\nin = "in"\nout = "o"\nstyle = "s.png"\nstrenght = 0.5\n')
    assert "unknown key(s) strenght" in one_error("--config", bad)
    bad.write_text("[[folder]\n")
    assert "invalid TOML" in one_error("--config", bad)
    assert "config file" in one_error("--config", bad, "--style", style_image)
    cfg = load_config(ROOT / "examples" / "watch.toml")  # the shipped example parses
    assert [f.name for f in cfg.folders] == ["phone-uploads", "scans"] and cfg.settle == 2.0
    unit = (ROOT / "examples" / "metastyle-watch.service").read_text()
    assert "watch --config" in unit and "[Install]" in unit


# ------------------------------------------------------------------------------------------ package shape


def test_importing_the_package_does_not_import_torch():
    """``watch --status`` and config checks stay fast: torch comes with the engine or the first video only."""
    code = ("import sys, metastyle_batch.watch, metastyle_batch.commands.watch; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_watch_errors_are_usage_errors_of_the_one_taxonomy(tmp_path, style_image):
    from metastyle_batch.errors import MetastyleError

    assert issubclass(WatchError, MetastyleError) and WatchError.exit_code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[[folder]\n")
    with pytest.raises(WatchError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"{bad}: invalid TOML") and "\n" not in str(info.value)
    (tmp_path / "in").mkdir()
    with pytest.raises(WatchError, match="unknown format 'heic'; use bmp, gif, jpeg, png, tiff, webp"):
        FolderSpec(tmp_path / "in", tmp_path / "o", style_image, format="heic").resolved()
    assert FolderSpec(tmp_path / "in", tmp_path / "o", style_image, format="TIF").resolved().format == "tiff"


def test_partial_outputs_are_recognised_by_name():
    from metastyle_batch.watch.rules import is_partial_output

    for name in (".a.png.abc123_z.part", ".b.JPEG.k2j3h4g5.part", ".clip.mp4.zzzzzzzz.part"):
        assert is_partial_output(name), name
    for name in ("a.png", ".a.png.part", ".notes.txt.abc123_z.part", ".a.png.ABC123_Z.part"):
        assert not is_partial_output(name), name
