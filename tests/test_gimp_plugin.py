"""The GIMP 3 plug-in: its own logic outside GIMP (with the real core, never mocked), install/uninstall,
the `gimp` CLI commands, and the real-GIMP test (tests/gimp/run_gimp_test.sh) when its chroot is cached.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from metastyle_batch import gimp
from metastyle_batch.commands.gimp import register

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = REPO / "plugins" / "gimp" / "metastyle" / "metastyle.py"
GIMP_TEST_SCRIPT = REPO / "tests" / "gimp" / "run_gimp_test.sh"
DEFAULT_CHROOT = Path("/var/cache/metastyle-batch/gimp-trixie")


def load_plugin(path: Path = PLUGIN_SOURCE):
    spec = importlib.util.spec_from_file_location(f"metastyle_gimp_plugin_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plugin():
    return load_plugin()


@pytest.fixture(scope="module")
def exe() -> Path:
    """This environment's real metastyle-batch executable (what `gimp install` records)."""
    try:
        return gimp.current_executable()
    except gimp.GimpInstallError as exc:
        pytest.skip(f"needs the metastyle-batch console script of this environment: {exc}")


def rgba_photo(path: Path, width: int = 40, height: int = 28) -> Path:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.dstack([x * 255 // width, y * 255 // height, (x + y) * 3 % 256]).astype(np.uint8)
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, :8] = 0
    alpha[:6] = 128
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return path


# ------------------------------------------------------------------------------------------ the plug-in file


def test_plugin_imports_without_gimp_and_uses_only_the_stdlib(plugin):
    assert plugin.PROCEDURE_NAME == "python-fu-metastyle"
    source = PLUGIN_SOURCE.read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"gi"}  # GIMP's Python + stdlib: no torch, no project code
    assert "shell=True" not in source and "os.system" not in source
    assert source.startswith("#!/usr/bin/env python3\n")
    assert 'add_menu_path("<Image>/Filters/Artistic")' in source and 'set_menu_label("MetaStyle…")' in source
    assert plugin.EXECUTABLE_FILE == gimp.EXECUTABLE_FILE  # install writes what the plug-in reads


def test_build_command_is_an_argument_list(plugin):
    cmd = plugin.build_command("/venv/bin/metastyle-batch", "/t/in put.png", "/t/out.png", "/s/wave; rm -rf ~.jpg")
    assert cmd == ["/venv/bin/metastyle-batch", "image", "/t/in put.png", "-o", "/t/out.png",
                   "--style", "/s/wave; rm -rf ~.jpg", "--strength", "1", "--overwrite", "--json"]


def test_build_command_second_style_mix_strength_preserve(plugin):
    cmd = plugin.build_command("mb", "i.png", "o.png", "a.jpg", style2="b.jpg", mix=0.3, strength=0.25,
                               preserve_color=True)
    assert cmd[cmd.index("--mix") + 1] == "0.7,0.3"
    assert cmd.count("--style") == 2 and cmd[cmd.index("--style", 6) + 1] == "b.jpg"
    assert cmd[cmd.index("--strength") + 1] == "0.25"
    assert "--preserve-color" in cmd and cmd[-1] == "--json"
    edge = plugin.build_command("mb", "i.png", "o.png", "a.jpg", style2="b.jpg", mix=1.0, strength=0.0)
    assert edge[edge.index("--mix") + 1] == "0,1" and edge[edge.index("--strength") + 1] == "0"
    assert "--mix" not in plugin.build_command("mb", "i.png", "o.png", "a.jpg", mix=0.9)  # no second style


@pytest.mark.parametrize("kwargs, words", [
    ({"style": ""}, "Choose a style image"),
    ({"style": "a.jpg", "strength": 1.5}, "Strength"),
    ({"style": "a.jpg", "style2": "b.jpg", "mix": -0.1}, "Mix"),
])
def test_build_command_rejects_bad_values(plugin, kwargs, words):
    with pytest.raises(plugin.PluginError, match=words):
        plugin.build_command("mb", "i.png", "o.png", **kwargs)


def test_find_executable_reads_the_recorded_path(plugin, exe, tmp_path):
    (tmp_path / plugin.EXECUTABLE_FILE).write_text(f"{exe}\n")
    assert plugin.find_executable(str(tmp_path), path_env="") == str(exe)


def test_find_executable_falls_back_to_path_only_without_a_record(plugin, exe, tmp_path):
    assert plugin.find_executable(str(tmp_path), path_env=str(exe.parent)) == str(exe)
    with pytest.raises(plugin.PluginError, match="metastyle-batch gimp install"):
        plugin.find_executable(str(tmp_path), path_env=str(tmp_path))


@pytest.mark.parametrize("content, words", [
    ("", "is empty"),
    ("bin/metastyle-batch\n", "not an absolute path"),
    ("/nonexistent/venv/bin/metastyle-batch\n", "no longer at /nonexistent/venv/bin/metastyle-batch"),
])
def test_find_executable_explains_a_broken_record(plugin, exe, tmp_path, content, words):
    (tmp_path / plugin.EXECUTABLE_FILE).write_text(content)
    with pytest.raises(plugin.PluginError, match=words) as info:
        plugin.find_executable(str(tmp_path), path_env=str(exe.parent))  # a record that is wrong is never ignored
    assert "run 'metastyle-batch gimp install' again" in str(info.value)


def test_find_executable_rejects_a_file_without_run_bit(plugin, tmp_path):
    fake = tmp_path / "metastyle-batch"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o644)
    (tmp_path / plugin.EXECUTABLE_FILE).write_text(str(fake))
    if os.access(fake, os.X_OK):
        pytest.skip("running as a user for whom every file is executable")
    with pytest.raises(plugin.PluginError, match="not executable"):
        plugin.find_executable(str(tmp_path))


def test_child_environment_drops_gimps_python_settings(plugin):
    env = plugin.child_environment({"PYTHONHOME": "/gimp/py", "PYTHONPATH": "/gimp/lib", "HOME": "/h",
                                    "METASTYLE_MODEL": "/m.safetensors", "PATH": "/bin"})
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env
    assert env["HOME"] == "/h" and env["METASTYLE_MODEL"] == "/m.safetensors" and env["PYTHONIOENCODING"] == "utf-8"


def test_run_command_pulses_while_waiting_and_reports_launch_errors(plugin, tmp_path):
    pulses = []
    code, out, err = plugin.run_command([sys.executable, "-c", "import time,sys; time.sleep(0.6); print('done');"
                                         "print('warn', file=sys.stderr); sys.exit(3)"],
                                        on_wait=lambda: pulses.append(1), poll_seconds=0.05)
    assert (code, out.strip(), err.strip()) == (3, "done", "warn") and len(pulses) >= 3
    with pytest.raises(plugin.PluginError, match="Cannot run .*metastyle-batch gimp install"):
        plugin.run_command([str(tmp_path / "missing" / "metastyle-batch"), "image"])


@pytest.mark.parametrize("code, stdout, stderr, words", [
    (2, "", "Error: style image not found: /x.jpg\n", "MetaStyle cannot start: style image not found: /x.jpg"),
    (1, '{"outputs": [], "failed": [{"input": "a.png", "error": "a.png: truncated file"}]}\n', "",
     "MetaStyle failed: a.png: truncated file"),
    (1, "", "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n",
     "(?s)exit status 1.*CUDA out of memory"),
    (-9, "", "", "stopped by signal 9 \\(out of memory\\?\\)"),
    (0, "not json\n", "", "printed no JSON result"),
    (0, '{"outputs": [], "failed": []}', "", "named no output file"),
])
def test_parse_result_error_paths(plugin, code, stdout, stderr, words):
    with pytest.raises(plugin.PluginError, match=words):
        plugin.parse_result(code, stdout, stderr)


def test_parse_result_success_skips_stray_lines(plugin):
    stdout = 'some library chatter\n{"outputs": [{"input": "i.png", "output": "/t/o.png", "width": 4, "height": 3}]}\n'
    assert plugin.parse_result(0, stdout, "Wrote /t/o.png\n") == "/t/o.png"


def test_expand_region_and_layer_name(plugin):
    assert plugin.expand_region(64, 40, 48, 32, 192, 128, margin=32) == (32, 8, 112, 96)
    assert plugin.expand_region(5, 5, 10, 10, 20, 18, margin=32) == (0, 0, 20, 18)
    assert plugin.layer_name("Photo", "/s/starry night.jpg") == "Photo (MetaStyle: starry night)"
    assert plugin.layer_name("L", "/s/a.png", "/s/b.webp") == "L (MetaStyle: a + b)"


# ------------------------------------------------------------------------------------------ with the real core


def test_stylize_file_runs_the_real_core_and_keeps_alpha(plugin, exe, tmp_path, style_image, style_image2, vgg16_path):
    src = rgba_photo(tmp_path / "layer.png")
    pulses = []
    out = plugin.stylize_file(str(exe), str(src), str(tmp_path / "out.png"), str(style_image), str(style_image2),
                              mix=0.3, strength=0.8, on_wait=lambda: pulses.append(1))
    assert out == str(tmp_path / "out.png")
    before, after = np.asarray(Image.open(src)), np.asarray(Image.open(out))
    assert after.shape == before.shape  # RGBA in, RGBA out, same size
    assert np.array_equal(after[..., 3], before[..., 3])
    assert np.abs(after[..., :3].astype(int) - before[..., :3]).mean() > 3  # it did something
    assert pulses  # GIMP's progress would have moved


def test_stylize_file_reports_core_errors_in_its_own_words(plugin, exe, tmp_path, style_image, vgg16_path):
    bad_style = tmp_path / "notes.png"
    bad_style.write_text("not an image")
    src = rgba_photo(tmp_path / "layer.png")
    with pytest.raises(plugin.PluginError, match=r"MetaStyle cannot start: style image .*notes\.png"):
        plugin.stylize_file(str(exe), str(src), str(tmp_path / "o.png"), str(bad_style))
    broken = tmp_path / "broken.png"
    broken.write_bytes(src.read_bytes()[:60])  # a truncated export: the core reports it as a failed input
    with pytest.raises(plugin.PluginError, match=r"MetaStyle failed: .*broken\.png"):
        plugin.stylize_file(str(exe), str(broken), str(tmp_path / "o.png"), str(style_image))
    assert not (tmp_path / "o.png").exists()


def test_installed_plugin_finds_this_environment_and_stylizes(exe, tmp_path, style_image, vgg16_path):
    """What GIMP does, minus GIMP: the installed copy reads its record and calls the core."""
    done = gimp.install(tmp_path / "GIMP" / "3.0")
    installed = load_plugin(done.plugin)
    found = installed.find_executable(os.path.dirname(done.plugin), path_env="")
    assert found == str(exe)
    out = installed.stylize_file(found, str(rgba_photo(tmp_path / "in.png")), str(tmp_path / "out.png"),
                                 str(style_image), preserve_color=True)
    assert Image.open(out).size == (40, 28)


# ------------------------------------------------------------------------------------------ install / uninstall


def test_install_copies_with_run_bit_and_records_the_executable(exe, tmp_path):
    gimp_dir = tmp_path / "GIMP" / "3.0"
    done = gimp.install(gimp_dir)
    folder = gimp_dir / "plug-ins" / "metastyle"
    assert done.plugin_dir == folder and done.plugin == folder / "metastyle.py" and done.executable == exe
    assert done.plugin.read_bytes() == PLUGIN_SOURCE.read_bytes()
    assert done.plugin.stat().st_mode & stat.S_IXUSR
    assert (folder / "metastyle-batch.path").read_text() == f"{exe}\n"
    assert Path((folder / "metastyle-batch.path").read_text().strip()).is_absolute()
    assert sorted(p.name for p in folder.iterdir()) == ["metastyle-batch.path", "metastyle.py"]


def test_reinstall_replaces_and_uninstall_removes(exe, tmp_path):
    gimp_dir = tmp_path / "g"
    first = gimp.install(gimp_dir)
    first.plugin.write_text("# old version\n")
    other = tmp_path / "other-venv" / "bin" / "metastyle-batch"
    other.parent.mkdir(parents=True)
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    again = gimp.install(gimp_dir, executable=other)
    assert again.plugin.read_bytes() == PLUGIN_SOURCE.read_bytes()
    assert (again.plugin_dir / gimp.EXECUTABLE_FILE).read_text().strip() == str(other)
    assert gimp.uninstall(gimp_dir) == again.plugin_dir and not again.plugin_dir.exists()
    assert (gimp_dir / "plug-ins").is_dir()  # only our folder goes
    assert gimp.uninstall(gimp_dir) is None


def test_uninstall_leaves_a_folder_it_did_not_make(tmp_path):
    folder = tmp_path / "plug-ins" / "metastyle"
    folder.mkdir(parents=True)
    (folder / "metastyle.py").write_text("# someone else's\n")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(gimp.GimpInstallError, match="notes.txt"):
        gimp.uninstall(tmp_path)
    assert (folder / "notes.txt").exists()


def test_install_refuses_a_non_executable(tmp_path):
    plain = tmp_path / "metastyle-batch"
    plain.write_text("")
    plain.chmod(0o644)
    if os.access(plain, os.X_OK):
        pytest.skip("running as a user for whom every file is executable")
    with pytest.raises(gimp.GimpInstallError, match="not an executable"):
        gimp.install(tmp_path / "g", executable=plain)


def test_default_gimp_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "custom"))
    assert gimp.default_gimp_dir() == tmp_path / "custom"
    monkeypatch.delenv("GIMP3_DIRECTORY")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        assert gimp.plugin_dir() == tmp_path / "xdg" / "GIMP" / "3.0" / "plug-ins" / "metastyle"
        monkeypatch.delenv("XDG_CONFIG_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert gimp.default_gimp_dir() == tmp_path / "home" / ".config" / "GIMP" / "3.0"


def test_plugin_source_is_the_checkout_file():
    assert gimp.plugin_source() == PLUGIN_SOURCE


# ------------------------------------------------------------------------------------------ CLI shell


@pytest.fixture
def cli():
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_install_and_uninstall(cli, exe, tmp_path):
    result = cli("gimp", "install", "--gimp-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    plugin_file = tmp_path / "plug-ins" / "metastyle" / "metastyle.py"
    assert str(plugin_file) in result.output and str(exe) in result.output and "Filters > Artistic" in result.output
    assert os.access(plugin_file, os.X_OK)
    result = cli("gimp", "uninstall", "--gimp-dir", str(tmp_path))
    assert result.exit_code == 0 and "Removed" in result.output and not plugin_file.exists()
    result = cli("gimp", "uninstall", "--gimp-dir", str(tmp_path))
    assert result.exit_code == 0 and "Nothing to remove" in result.output


def test_cli_install_error_is_one_line(cli, tmp_path):
    (tmp_path / "plug-ins").mkdir()
    (tmp_path / "plug-ins" / "metastyle").write_text("a file where the folder should be")
    result = cli("gimp", "install", "--gimp-dir", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error: ") and "not a folder" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_default_dir_follows_gimp3_directory(cli, exe, tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "profile"))
    assert cli("gimp", "install").exit_code == 0
    assert (tmp_path / "profile" / "plug-ins" / "metastyle" / "metastyle.py").is_file()


# ------------------------------------------------------------------------------------------ real GIMP


def _gimp_test_reason() -> str | None:
    """None when the real-GIMP test should run; otherwise why it is skipped."""
    forced = os.environ.get("METASTYLE_GIMP_TEST")
    if forced == "0":
        return "METASTYLE_GIMP_TEST=0"
    if forced == "1":
        return None
    chroot = Path(os.environ.get("METASTYLE_GIMP_CHROOT") or DEFAULT_CHROOT)
    if not (chroot / ".metastyle-gimp-ready").is_file():
        return (f"real-GIMP test: no cached GIMP 3 chroot at {chroot}. Run it with "
                "'sudo tests/gimp/run_gimp_test.sh' (builds the chroot once, ~3-4 min, ~700 MB), "
                "or set METASTYLE_GIMP_TEST=1 (needs root and debootstrap)")
    if os.geteuid() != 0:
        return "real-GIMP test: the cached chroot needs root (chroot, mount); run 'sudo tests/gimp/run_gimp_test.sh'"
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the real-GIMP test uses a Linux chroot")
def test_real_gimp(exe, vgg16_path, tmp_path):
    reason = _gimp_test_reason()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, METASTYLE_BATCH=str(exe), METASTYLE_VGG16=str(vgg16_path))
    done = subprocess.run(["bash", str(GIMP_TEST_SCRIPT)], env=env, capture_output=True, text=True, timeout=1800)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    assert done.stdout.strip().splitlines()[-1] == "GIMP TEST PASSED", report[-6000:]
    assert "FAILED" not in done.stdout
