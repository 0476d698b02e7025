#!/usr/bin/env bash
# The real-GIMP test of the MetaStyle plug-in: GIMP 3.0 (Debian trixie) in a cached chroot runs
# plugins/gimp/metastyle/metastyle.py, installed by `metastyle-batch gimp install`, on real images.
#
#   sudo tests/gimp/run_gimp_test.sh              # build the chroot once (~3-4 min, ~700 MB), then test
#   sudo tests/gimp/run_gimp_test.sh --build-only # only build/refresh the cached chroot
#   sudo tests/gimp/run_gimp_test.sh --rebuild    # throw the cached chroot away and build it again
#   sudo tests/gimp/run_gimp_test.sh --keep       # keep the work folder (images, GIMP output) for a look
#
# Needs root (debootstrap, chroot and bind mounts), debootstrap (apt-get install debootstrap) and network
# access to a Debian mirror the first time. All mounts live in a private mount namespace (unshare), so they
# vanish when the script ends, however it ends.
#
# Environment:
#   METASTYLE_BATCH        the metastyle-batch executable to install and test (default: the one on PATH,
#                          else .venv/bin/metastyle-batch of this checkout)
#   METASTYLE_GIMP_CHROOT  where the chroot is cached (default /var/cache/metastyle-batch/gimp-trixie)
#   METASTYLE_GIMP_MIRROR  Debian mirror (default: the first .../debian URI apt uses on this machine,
#                          else http://deb.debian.org/debian)
#   METASTYLE_MODEL, METASTYLE_VGG16  passed through (default: the CLI's model when it exists, else a
#                          random test model; the VGG-16 weights the CLI resolves on this machine)
#   OMP_NUM_THREADS        compute threads for the stylization (default 2)
#
# Exit status 0 and the last line "GIMP TEST PASSED" when everything checked out.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/tests/gimp"
ROOT="${METASTYLE_GIMP_CHROOT:-/var/cache/metastyle-batch/gimp-trixie}"
SUITE=trixie
PACKAGES="gimp python3-gi gir1.2-gimp-3.0"
STAMP_TEXT="debootstrap --variant=minbase $SUITE + $PACKAGES"
STAMP="$ROOT/.metastyle-gimp-ready"

BUILD_ONLY=0 REBUILD=0 KEEP=0
for arg in "$@"; do
  case "$arg" in
    --build-only) BUILD_ONLY=1 ;;
    --rebuild) REBUILD=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "run_gimp_test.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[gimp-test] %s\n' "$*" >&2; }
die() { printf '[gimp-test] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount); run: sudo $0 $*"

# Everything below runs in a private mount namespace: no mount can outlive the script.
if [ -z "${_METASTYLE_GIMP_NS:-}" ]; then
  command -v unshare >/dev/null || die "unshare (util-linux) is missing"
  exec unshare --mount --propagation private env _METASTYLE_GIMP_NS=1 bash "$0" "$@"
fi

mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9  # one build or run at a time per chroot

# ------------------------------------------------------------------------------------------ the chroot

mirror() {
  if [ -n "${METASTYLE_GIMP_MIRROR:-}" ]; then echo "$METASTYLE_GIMP_MIRROR"; return; fi
  local uri
  uri="$( { grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | sed -E 's/^[[:space:]]*URIs:[[:space:]]*//' | tr ' ' '\n'
            grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*//'
          } | grep -E '^https?://.*/debian/?$' | head -n1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

build_chroot() {
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
  local partial="$ROOT.partial" url t0 t1 t2
  url="$(mirror)"
  rm -rf --one-file-system "$partial"
  say "building the GIMP 3 chroot in $ROOT from $url (once; ~3-4 minutes, ~700 MB)"
  t0=$(date +%s)
  debootstrap --variant=minbase "$SUITE" "$partial" "$url" >"$ROOT.build.log" 2>&1 \
    || { tail -n 20 "$ROOT.build.log" >&2; die "debootstrap failed (full log: $ROOT.build.log)"; }
  t1=$(date +%s)
  # shellcheck disable=SC2086
  chroot "$partial" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends $PACKAGES >>"$ROOT.build.log" 2>&1 \
    || { tail -n 20 "$ROOT.build.log" >&2; die "apt-get install in the chroot failed (full log: $ROOT.build.log)"; }
  chroot "$partial" apt-get clean >/dev/null 2>&1 || true
  t2=$(date +%s)
  echo "$STAMP_TEXT" >"$partial/.metastyle-gimp-ready"
  rm -rf --one-file-system "$ROOT"
  mv "$partial" "$ROOT"
  say "chroot ready: debootstrap $((t1 - t0)) s, GIMP packages $((t2 - t1)) s, total $((t2 - t0)) s, $(du -sh "$ROOT" | cut -f1)"
}

if [ "$REBUILD" = 1 ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$STAMP_TEXT" ]; then
  build_chroot
else
  say "using the cached chroot $ROOT"
fi
[ -x "$ROOT/usr/bin/gimp-console-3.0" ] || die "$ROOT has no gimp-console-3.0; run again with --rebuild"
say "$(chroot "$ROOT" gimp-console-3.0 --version 2>/dev/null | head -n1)"
[ "$BUILD_ONLY" = 1 ] && exit 0

# ------------------------------------------------------------------------------------------ the host side

EXE="${METASTYLE_BATCH:-$(command -v metastyle-batch || true)}"
[ -n "$EXE" ] || { [ -x "$REPO/.venv/bin/metastyle-batch" ] && EXE="$REPO/.venv/bin/metastyle-batch"; }
[ -n "$EXE" ] && [ -x "$EXE" ] || die "no metastyle-batch executable: set METASTYLE_BATCH=/path/to/venv/bin/metastyle-batch"
EXE="$(cd "$(dirname "$EXE")" && pwd)/$(basename "$EXE")"
PY="$(dirname "$EXE")/python"
[ -x "$PY" ] || PY="$(sed -n '1s/^#![[:space:]]*//p' "$EXE" | cut -d' ' -f1)"
[ -x "$PY" ] || die "cannot find the Python of $EXE"

WORK="$(mktemp -d /tmp/metastyle-gimp-test.XXXXXX)"
chmod 755 "$WORK"
MOUNTED=()  # mount points inside the chroot, in the order they were made
cleanup() {
  local status=$? i
  set +e
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}"; done
  # empty mount points left in the chroot's /tmp (the work folder, pytest's model folder)
  find "$ROOT/tmp" -xdev -mindepth 1 -depth -type d -empty -delete 2>/dev/null
  if [ "$KEEP" = 1 ]; then say "work folder kept: $WORK"; else rm -rf --one-file-system "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
mkdir -p "$WORK/home" "$WORK/tmp" "$WORK/cache"

say "metastyle-batch: $EXE"
export METASTYLE_CACHE="$WORK/cache"
# The model and VGG-16 weights the CLI will use, resolved here so the chroot can see the same files.
eval "$("$PY" - "$WORK" <<'EOF'
import os, shlex, sys
from pathlib import Path
work = Path(sys.argv[1])
out = {}
from metastyle_batch.paths import default_model_path
model = os.environ.get("METASTYLE_MODEL") or str(default_model_path())
if not Path(model).is_file():
    import torch
    from metastyle_batch.model.io import save_model
    from metastyle_batch.model.meta import MetaNet
    torch.manual_seed(0)
    model = str(work / "test-model.safetensors")
    save_model(MetaNet(8), model, {"style_size": 64, "steps": 0})
    print("echo '[gimp-test] no trained model found: using a random test model' >&2")
out["METASTYLE_MODEL"] = str(Path(model).resolve())
from metastyle_batch.model.vgg_weights import resolve_vgg16
out["METASTYLE_VGG16"] = str(resolve_vgg16(download=False).resolve())
for k, v in out.items():
    print(f"export {k}={shlex.quote(v)}")
EOF
)" || die "cannot resolve the model or the VGG-16 weights (run: metastyle-batch setup)"
say "model: $METASTYLE_MODEL"
say "VGG-16: $METASTYLE_VGG16"

# Install the plug-in exactly as a user does: default location under (this test's) HOME.
env -u XDG_CONFIG_HOME -u GIMP3_DIRECTORY HOME="$WORK/home" "$EXE" gimp install >&2
PLUGIN="$WORK/home/.config/GIMP/3.0/plug-ins/metastyle/metastyle.py"
[ -x "$PLUGIN" ] || die "gimp install did not leave an executable $PLUGIN"
say "recorded executable: $(cat "$WORK/home/.config/GIMP/3.0/plug-ins/metastyle/metastyle-batch.path")"

# Test images and the CLI's own answers to compare the plug-in's layers with.
"$PY" "$HERE/host_side.py" prepare "$WORK" "$EXE" "$REPO/plugins/gimp/metastyle/metastyle.py"

# ------------------------------------------------------------------------------------------ mounts

mount -t proc proc "$ROOT/proc" && MOUNTED+=("$ROOT/proc")
mount --bind /dev "$ROOT/dev" && MOUNTED+=("$ROOT/dev")
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm" && MOUNTED+=("$ROOT/dev/shm")  # GIMP's plug-ins use shm

bind_ro() {  # bind a host folder (or file) at the same path inside the chroot, read-only
  local src="$1" dst="$ROOT$1"
  if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; [ -e "$dst" ] || touch "$dst"; fi
  mount --bind "$src" "$dst" && MOUNTED+=("$dst")
  mount -o remount,bind,ro "$dst" 2>/dev/null || true
}

# Host paths the plug-in's subprocess needs: the venv, its base Python, the package's source (editable
# installs), the model and the weights. System folders of the chroot are never covered: a Python living
# in /usr gets only its interpreter file and its stdlib folder bound (when the chroot lacks them).
mapfile -t NEEDS < <("$PY" - "$EXE" "$WORK" <<'EOF'
import os, sys, sysconfig
import metastyle_batch
paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.abspath(metastyle_batch.__file__))),
         os.path.dirname(os.environ["METASTYLE_MODEL"]), os.path.dirname(os.environ["METASTYLE_VGG16"]),
         os.path.dirname(os.path.abspath(sys.argv[1]))}
real = os.path.realpath(sys.executable)
for p in list(paths):
    if os.path.islink(p) or os.path.realpath(p) != p:
        paths.add(os.path.realpath(p))
system = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/var", "/opt")
out = set()
for p in paths:
    if p == sys.argv[2] or p.startswith(sys.argv[2] + "/"):
        continue  # inside the work folder, which is bound read-write anyway
    if p in ("/", "") or p in system or p.startswith(("/proc", "/sys", "/dev", "/run")):
        continue
    if p.startswith(system) and not p.startswith(("/usr/local", "/opt/")):
        continue
    out.add(p)
if real.startswith("/usr/") and not real.startswith("/usr/local/"):
    out.add("FILE:" + real)
    out.add("STDLIB:" + sysconfig.get_paths()["stdlib"])
# parents first; drop folders already inside another one
dirs = sorted(p for p in out if ":" not in p)
kept = [p for p in dirs if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in dirs)]
for p in kept + sorted(p for p in out if ":" in p):
    print(p)
EOF
)
for need in "${NEEDS[@]}"; do
  case "$need" in
    FILE:*) f="${need#FILE:}"; [ -e "$ROOT$f" ] && say "warning: $f exists in the chroot; not replacing it" || bind_ro "$f" ;;
    STDLIB:*) d="${need#STDLIB:}"; [ -e "$ROOT$d" ] && say "warning: $d exists in the chroot; not replacing it" || bind_ro "$d" ;;
    *) bind_ro "$need" ;;
  esac
  say "bound into the chroot: ${need#*:}"
done
mkdir -p "$ROOT$WORK"
mount --bind "$WORK" "$ROOT$WORK" && MOUNTED+=("$ROOT$WORK")  # read-write: images, GIMP's profile, results

# ------------------------------------------------------------------------------------------ GIMP

say "running GIMP 3 (gimp-console-3.0, python-fu-eval batch)"
t0=$(date +%s)
set +e
chroot "$ROOT" /usr/bin/env -i \
  HOME="$WORK/home" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 TMPDIR="$WORK/tmp" \
  METASTYLE_MODEL="$METASTYLE_MODEL" METASTYLE_VGG16="$METASTYLE_VGG16" METASTYLE_CACHE="$WORK/cache" \
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" METASTYLE_GIMP_WORK="$WORK" \
  gimp-console-3.0 --no-interface --no-data --no-fonts --quit \
    --batch-interpreter=python-fu-eval --batch - <"$HERE/gimp_checks.py" >"$WORK/gimp.log" 2>&1
gimp_status=$?
set -e
t1=$(date +%s)
say "GIMP finished with status $gimp_status after $((t1 - t0)) s"
if [ ! -f "$WORK/results.json" ]; then
  sed 's/^/  gimp| /' "$WORK/gimp.log" >&2
  die "GIMP wrote no results (its whole log is above)"
fi
# What the checks printed, and the error messages GIMP itself showed (a dialog in the GUI).
grep -E '^\[gimp\]|GIMP-Error|^MetaStyle|^metastyle-batch|Traceback|Error:' "$WORK/gimp.log" | sed 's/^/  gimp| /' >&2 || true

if ! "$PY" "$HERE/host_side.py" check "$WORK"; then
  sed 's/^/  gimp| /' "$WORK/gimp.log" >&2
  die "checks failed (GIMP's whole log is above)"
fi
# Errors must reach the user as GIMP messages, not only as a return status.
for expected in "notimage.png: not an image" "run 'metastyle-batch gimp install' again"; do
  if grep -A1 "GIMP-Error: .*python-fu-metastyle" "$WORK/gimp.log" | grep -qF "$expected"; then
    echo "ok: GIMP showed the error message containing: $expected"
  else
    die "GIMP did not show an error message containing: $expected"
  fi
done
echo "GIMP TEST PASSED"
