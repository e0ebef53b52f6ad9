#!/usr/bin/env bash
# Install GradScope on a Debian/Ubuntu machine: the system libraries Qt needs, then a virtual environment
# in .venv with GradScope in editable mode.
#   scripts/install.sh          the app
#   scripts/install.sh --test   the app, the test tools and PyTorch (the CPU build, pinned: the tests' oracle),
#                               the static checkers that .ci/run uses (ruff, mypy, import-linter; [dev]),
#                               and Dask's distributed scheduler ([dask]), which the sweep tests start
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

# Qt's runtime libraries (offscreen and X11), a font, OpenMP for Numba, Xvfb for headless windows.
# docs/environment.md says why each is here.
apt_packages="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-shape0 libxcb-randr0
  libxcb-render-util0 libxcb-image0 libxcb-xkb1 libxcb-xfixes0 libxcb-sync1 libx11-xcb1 libxkbcommon0
  libxkbcommon-x11-0 libgl1 libegl1 libglib2.0-0 libfontconfig1 fonts-dejavu-core libgomp1"
missing=""
for p in $apt_packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "installing system packages:$missing" >&2
  $sudo_cmd apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends $missing >&2
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv || { echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
fi
.venv/bin/python -m pip install -q --upgrade pip >&2
if [ "$with_tests" = 1 ]; then
  # torch is pinned: an unpinned torch pulls a multi-GB CUDA build (docs/environment.md)
  .venv/bin/python -m pip install -q -e ".[test,dev,dask]" "torch==2.13.0" >&2
else
  .venv/bin/python -m pip install -q -e . >&2
fi
# Compile the engine's kernels now (one process per dtype, ~10 s), so that no first start waits for it;
# they are cached where GradScope finds them later (NUMBA_CACHE_DIR if set, else the package's __pycache__).
.venv/bin/gradscope compile
echo "GradScope installed in $(pwd)/.venv" >&2
