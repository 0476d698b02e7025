#!/usr/bin/env python3
# MetaStyle for GIMP 3: arbitrary neural style transfer on the active layer.
#
# Install with `metastyle-batch gimp install` (it copies this file to <GIMP dir>/plug-ins/metastyle/,
# sets its run bit and writes metastyle-batch.path next to it). GIMP's own Python cannot import torch,
# so this plug-in never imports the metastyle_batch package: it exports the layer to a temporary PNG,
# runs `metastyle-batch image IN -o OUT --style … --json` as a separate process (an argument list, never a
# shell) and loads OUT back as a layer.
#
# Only GIMP's Python and the standard library are used here. The GIMP-independent logic (finding the
# executable, building the command line, running it, reading its JSON answer, error texts) is plain
# functions that tests import without GIMP: the `gi` imports are guarded and Gimp.main() runs only when
# GIMP starts this file as a program.

import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import gi

    gi.require_version("Gimp", "3.0")
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gegl", "0.4")
    from gi.repository import Gegl, Gimp, GimpUi, Gio, GLib, GObject
except (ImportError, ValueError):  # not inside GIMP 3 (unit tests, or GIMP 2.10's Python)
    Gimp = None

PROCEDURE_NAME = "python-fu-metastyle"
EXECUTABLE_FILE = "metastyle-batch.path"  # written by `metastyle-batch gimp install`
SCRIPT_NAME = "metastyle-batch"
SELECTION_MARGIN = 32  # pixels of context stylized around a selection, so its edge matches the inside
OUTPUT_NEW_LAYER = "new-layer"
OUTPUT_REPLACE = "replace"
REINSTALL_HINT = ("run 'metastyle-batch gimp install' again from the environment where metastyle-batch is "
                  "installed, then restart GIMP")


class PluginError(Exception):
    """Something the user must see: the message is shown in GIMP as is."""


# ------------------------------------------------------------------------------------------ pure logic


def plugin_dir():
    return os.path.dirname(os.path.abspath(__file__))


def find_executable(directory=None, path_env=None):
    """The metastyle-batch to run: the path recorded by `gimp install`, else one on PATH.

    Raises PluginError when the recorded path no longer works (the venv moved) or nothing is found.
    """
    directory = directory or plugin_dir()
    record = os.path.join(directory, EXECUTABLE_FILE)
    try:
        with open(record, encoding="utf-8") as f:
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        lines = None
    except OSError as exc:
        raise PluginError(f"Cannot read {record}: {exc.strerror or exc}. To fix it, {REINSTALL_HINT}.")
    if lines is not None:
        if not lines:
            raise PluginError(f"{record} is empty. To fix it, {REINSTALL_HINT}.")
        exe = os.path.expanduser(lines[0])
        if not os.path.isabs(exe):
            raise PluginError(f"{record} names {exe!r}, which is not an absolute path. To fix it, {REINSTALL_HINT}.")
        if not os.path.isfile(exe):
            raise PluginError(f"metastyle-batch is no longer at {exe} (recorded in {record}); the environment was "
                              f"probably moved or deleted. To fix it, {REINSTALL_HINT}.")
        if not os.access(exe, os.X_OK):
            raise PluginError(f"{exe} (recorded in {record}) is not executable. To fix it, {REINSTALL_HINT}.")
        return exe
    found = shutil.which(SCRIPT_NAME, path=path_env)
    if found:
        return os.path.abspath(found)
    raise PluginError(f"Cannot find metastyle-batch: {record} is missing and it is not on GIMP's PATH. "
                      f"To fix it, {REINSTALL_HINT}.")


def _number(value):
    """Shortest text for a float that the CLI reads back exactly enough (no exponent for small values)."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def build_command(executable, input_png, output_png, style, style2=None, mix=0.5, strength=1.0,
                  preserve_color=False):
    """The argument list for one stylization; ``mix`` is the second style's share (0..1)."""
    if not style:
        raise PluginError("Choose a style image.")
    if not 0.0 <= float(strength) <= 1.0:
        raise PluginError(f"Strength must be between 0 and 1, got {strength}.")
    cmd = [executable, "image", input_png, "-o", output_png, "--style", style]
    if style2:
        mix = float(mix)
        if not 0.0 <= mix <= 1.0:
            raise PluginError(f"Mix must be between 0 and 1, got {mix}.")
        cmd += ["--style", style2, "--mix", f"{_number(1.0 - mix)},{_number(mix)}"]
    cmd += ["--strength", _number(strength)]
    if preserve_color:
        cmd.append("--preserve-color")
    cmd += ["--overwrite", "--json"]
    return cmd


def child_environment(environ=None):
    """GIMP's environment minus what would break another Python (GIMP may set PYTHONHOME/PYTHONPATH)."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items()
           if not k.startswith("PYTHON") and k != "__PYVENV_LAUNCHER__"}
    env["PYTHONIOENCODING"] = "utf-8"
    env["NO_COLOR"] = "1"
    return env


def run_command(cmd, env=None, on_wait=None, poll_seconds=0.1):
    """Run ``cmd`` (a list; no shell) to the end; returns (returncode, stdout, stderr) as text.

    ``on_wait`` is called about every ``poll_seconds`` while it runs (GIMP's progress pulse).
    """
    kwargs = {}
    if os.name == "nt":
        kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=child_environment() if env is None else env, **kwargs)
    except OSError as exc:
        raise PluginError(f"Cannot run {cmd[0]}: {exc.strerror or exc}. To fix it, {REINSTALL_HINT}.")
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=poll_seconds)
                break
            except subprocess.TimeoutExpired:
                if on_wait is not None:
                    on_wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return (proc.returncode, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace"))


def _json_object(stdout):
    """The last line of stdout that is a JSON object (the CLI prints exactly one)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _stderr_summary(stderr, limit=6):
    """The ``Error: …`` line(s) of stderr, else its last lines (a traceback's last line says the most)."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    chosen = errors or lines[-limit:]
    return "\n".join(chosen)


def parse_result(returncode, stdout, stderr):
    """The output file named by the CLI's JSON answer; PluginError with the CLI's own words otherwise."""
    answer = _json_object(stdout)
    if returncode == 0 and answer is not None:
        outputs = answer.get("outputs") or []
        if outputs and outputs[0].get("output"):
            return outputs[0]["output"]
        raise PluginError("metastyle-batch reported success but named no output file.")
    if answer is not None and answer.get("failed"):
        messages = [str(f.get("error") or f.get("input") or "unknown error") for f in answer["failed"]]
        raise PluginError("MetaStyle failed: " + "; ".join(messages))
    summary = _stderr_summary(stderr)
    if returncode == 2:
        text = summary[len("Error:"):].strip() if summary.startswith("Error:") and "\n" not in summary else summary
        raise PluginError("MetaStyle cannot start: " + (text or "usage error (exit status 2)"))
    if returncode is not None and returncode < 0:
        reason = f"it was stopped by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
        raise PluginError(f"metastyle-batch did not finish: {reason}." + (f"\n{summary}" if summary else ""))
    if returncode == 0:
        raise PluginError("metastyle-batch finished but printed no JSON result (is it an old version?)."
                          + (f"\n{summary}" if summary else ""))
    raise PluginError(f"metastyle-batch failed (exit status {returncode})" + (f":\n{summary}" if summary else "."))


def stylize_file(executable, input_png, output_png, style, style2=None, mix=0.5, strength=1.0,
                 preserve_color=False, on_wait=None, env=None):
    """Stylize one PNG file into another through the CLI; returns the output path."""
    cmd = build_command(executable, input_png, output_png, style, style2, mix, strength, preserve_color)
    returncode, stdout, stderr = run_command(cmd, env=env, on_wait=on_wait)
    output = parse_result(returncode, stdout, stderr)
    if not os.path.isfile(output):
        raise PluginError(f"metastyle-batch reported {output}, but that file does not exist.")
    return output


def layer_name(source_name, style, style2=None):
    def stem(path):
        return os.path.splitext(os.path.basename(path))[0] or path

    styles = stem(style) + (f" + {stem(style2)}" if style2 else "")
    return f"{source_name} (MetaStyle: {styles})"


def expand_region(x, y, width, height, limit_width, limit_height, margin=SELECTION_MARGIN):
    """Grow a rectangle by ``margin`` on each side, clipped to (0, 0, limit_width, limit_height)."""
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(limit_width, x + width + margin), min(limit_height, y + height + margin)
    return x0, y0, x1 - x0, y1 - y0


# ------------------------------------------------------------------------------------------ GIMP


def _file_path(gfile, what):
    if gfile is None:
        return None
    path = gfile.get_path()
    if not path:
        raise PluginError(f"The {what} must be a local file, not {gfile.get_uri()}.")
    if not os.path.isfile(path):
        raise PluginError(f"The {what} {path} does not exist.")
    return path


def _pick_layer(drawables):
    if len(drawables) != 1:
        raise PluginError(f"Select exactly one layer for MetaStyle ({len(drawables)} are selected).")
    drawable = drawables[0]
    if not isinstance(drawable, Gimp.Layer) or isinstance(drawable, Gimp.LayerMask):
        raise PluginError("MetaStyle works on a layer; select a layer, not a mask or a channel.")
    if drawable.is_group():
        raise PluginError("MetaStyle cannot stylize a layer group; select one of its layers.")
    return drawable


def _export_region(image, drawable, region, path):
    """Write the drawable's pixels in ``region`` (drawable coordinates) to a PNG, alpha included."""
    x, y, width, height = region
    base = Gimp.ImageBaseType.GRAY if image.get_base_type() == Gimp.ImageBaseType.GRAY else Gimp.ImageBaseType.RGB
    temp = Gimp.Image.new(drawable.get_width(), drawable.get_height(), base)
    try:
        copy = Gimp.Layer.new_from_drawable(drawable, temp)
        temp.insert_layer(copy, None, 0)
        copy.set_offsets(0, 0)
        copy.set_visible(True)
        copy.set_opacity(100.0)
        copy.set_mode(Gimp.LayerMode.NORMAL)
        if copy.get_mask() is not None:
            copy.remove_mask(Gimp.MaskApplyMode.DISCARD)  # the layer's own mask stays in GIMP, not in pixels
        if (x, y, width, height) != (0, 0, drawable.get_width(), drawable.get_height()):
            temp.crop(width, height, x, y)
        _save_png(temp, path)
    finally:
        temp.delete()


# Fast, faithful PNG for the hand-over: little compression, colours under full transparency kept, no extras.
_PNG_OPTIONS = {"compression": 1, "save-transparent": True, "bkgd": False, "phys": False, "time": False,
                "offs": False, "interlaced": False, "include-thumbnail": False, "include-exif": False,
                "include-xmp": False, "include-iptc": False, "include-comment": False,
                "include-color-profile": False}


def _save_png(image, path):
    gfile = Gio.File.new_for_path(path)
    procedure = Gimp.get_pdb().lookup_procedure("file-png-export")
    if procedure is None:  # no PNG plug-in options to set: let GIMP pick the exporter by extension
        ok = Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, gfile, None)
    else:
        config = procedure.create_config()
        config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        config.set_property("image", image)
        config.set_property("file", gfile)
        names = {arg.name for arg in procedure.get_arguments()}
        for name, value in _PNG_OPTIONS.items():
            if name in names:
                config.set_property(name, value)
        ok = procedure.run(config).index(0) == Gimp.PDBStatusType.SUCCESS
    if not ok or not os.path.isfile(path):
        raise PluginError(f"GIMP could not export the layer to {path}.")


def _replace_pixels(drawable, result, region):
    """Write the result layer's pixels into the drawable, inside the selection (GIMP's shadow buffer)."""
    x, y, width, height = region
    Gegl.init(None)
    shadow = drawable.get_shadow_buffer()
    full = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    drawable.get_buffer().copy(full, Gegl.AbyssPolicy.NONE, shadow, full)
    result.get_buffer().copy(Gegl.Rectangle.new(0, 0, width, height), Gegl.AbyssPolicy.NONE, shadow,
                             Gegl.Rectangle.new(x, y, width, height))
    shadow.flush()
    drawable.merge_shadow(True)  # applies through the selection mask, with undo
    drawable.update(x, y, width, height)


def stylize_drawable(image, drawables, config, progress=True):
    style = _file_path(config.get_property("style"), "style image")
    if style is None:
        raise PluginError("Choose a style image.")
    style2 = _file_path(config.get_property("style2"), "second style image")
    mix = config.get_property("mix")
    strength = config.get_property("strength")
    preserve_color = config.get_property("preserve-color")
    output_mode = config.get_property("output")
    drawable = _pick_layer(drawables)

    non_empty, sx, sy, sw, sh = drawable.mask_intersect()
    if not non_empty:
        raise PluginError("The selection does not touch the selected layer; nothing to stylize.")
    has_selection = not Gimp.Selection.is_empty(image)
    region = (expand_region(sx, sy, sw, sh, drawable.get_width(), drawable.get_height()) if has_selection
              else (0, 0, drawable.get_width(), drawable.get_height()))
    executable = find_executable()

    workdir = tempfile.mkdtemp(prefix="metastyle-gimp-")
    try:
        input_png = os.path.join(workdir, "layer.png")
        output_png = os.path.join(workdir, "stylized.png")
        if progress:
            Gimp.progress_init("MetaStyle: stylizing " + drawable.get_name())
        _export_region(image, drawable, region, input_png)
        result_png = stylize_file(executable, input_png, output_png, style, style2, mix, strength, preserve_color,
                                  on_wait=Gimp.progress_pulse if progress else None)
        if progress:
            Gimp.progress_set_text("MetaStyle: adding the result")

        image.undo_group_start()
        try:
            result = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(result_png))
            if result is None:
                raise PluginError(f"GIMP could not load the stylized image {result_png}.")
            if (result.get_width(), result.get_height()) != region[2:]:
                result.delete()
                raise PluginError(f"metastyle-batch returned a {result.get_width()}x{result.get_height()} image for a "
                                  f"{region[2]}x{region[3]} layer.")
            if output_mode == OUTPUT_REPLACE:
                _replace_pixels(drawable, result, region)
                result.delete()
                changed = drawable
            else:
                _, ox, oy = drawable.get_offsets()
                result.set_name(layer_name(drawable.get_name(), style, style2))
                image.insert_layer(result, drawable.get_parent(), image.get_item_position(drawable))
                result.set_offsets(ox + region[0], oy + region[1])
                if has_selection:
                    result.add_mask(result.create_mask(Gimp.AddMaskType.SELECTION))
                image.set_selected_layers([result])
                changed = result
        finally:
            image.undo_group_end()
        Gimp.displays_flush()
        return changed
    finally:
        if progress:
            Gimp.progress_end()
        shutil.rmtree(workdir, ignore_errors=True)


def _run(procedure, run_mode, image, drawables, config, data):
    if run_mode == Gimp.RunMode.INTERACTIVE:
        GimpUi.init(PROCEDURE_NAME)
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "MetaStyle")
        dialog.fill(["style", "style2", "mix", "strength", "preserve-color", "output"])
        if not dialog.run():
            dialog.destroy()
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        dialog.destroy()
    try:
        stylize_drawable(image, drawables, config)
    except PluginError as exc:
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(str(exc)))
    except Exception as exc:  # a bug here must still reach the user as a message, not a silent failure
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                           GLib.Error(f"MetaStyle: unexpected {type(exc).__name__}: {exc}"))
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


if Gimp is not None:

    class MetaStyle(Gimp.PlugIn):
        def do_query_procedures(self):
            return [PROCEDURE_NAME]

        def do_set_i18n(self, name):
            return False

        def do_create_procedure(self, name):
            procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, _run, None)
            procedure.set_image_types("RGB*, GRAY*")
            procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
            procedure.set_menu_label("MetaStyle…")
            procedure.add_menu_path("<Image>/Filters/Artistic")
            procedure.set_documentation(
                "Neural style transfer with any style image",
                "Repaints the selected layer in the style of a painting, texture or photo (a second style can "
                "be blended in). The result becomes a new layer above it, or replaces its pixels; a selection "
                "limits the effect. Runs metastyle-batch (set up with 'metastyle-batch gimp install').",
                name)
            procedure.set_attribution("metastyle-batch authors", "metastyle-batch authors", "2025")
            procedure.add_file_argument("style", "_Style image", "The style image (a painting, a texture…)",
                                        Gimp.FileChooserAction.OPEN, True, None, GObject.ParamFlags.READWRITE)
            procedure.add_file_argument("style2", "Second style (optional)", "A second style image to blend in",
                                        Gimp.FileChooserAction.OPEN, True, None, GObject.ParamFlags.READWRITE)
            procedure.add_double_argument("mix", "_Mix", "Share of the second style (0 = first only, 1 = second only)",
                                          0.0, 1.0, 0.5, GObject.ParamFlags.READWRITE)
            procedure.add_double_argument("strength", "S_trength", "How much style: 1 = full, 0 = the photo itself",
                                          0.0, 1.0, 1.0, GObject.ParamFlags.READWRITE)
            procedure.add_boolean_argument("preserve-color", "_Preserve colours",
                                           "Keep the layer's colours; take only brightness patterns from the style",
                                           False, GObject.ParamFlags.READWRITE)
            choice = Gimp.Choice.new()
            choice.add(OUTPUT_NEW_LAYER, 0, "New layer", "Add the result as a new layer above")
            choice.add(OUTPUT_REPLACE, 1, "Replace layer", "Replace the layer's pixels (inside the selection)")
            procedure.add_choice_argument("output", "_Output", "Where the result goes", choice, OUTPUT_NEW_LAYER,
                                          GObject.ParamFlags.READWRITE)
            return procedure


if __name__ == "__main__":
    if Gimp is None:
        sys.exit("This is a GIMP 3 plug-in: install it with 'metastyle-batch gimp install' and run it from GIMP "
                 "(Filters > Artistic > MetaStyle...).")
    Gimp.main(MetaStyle.__gtype__, sys.argv)
