#!/usr/bin/env bash
# The two commands of a fresh machine (Debian/Ubuntu, or a desktop with its own display):
#
#   ./quickstart.sh demo   set up, then run the demo: simulate a noisy STEM image, denoise it, score it
#   ./quickstart.sh test   set up, then run the tests (a virtual display, Xvfb, is installed where there is none)
#
# Setting up makes .venv beside this script and installs into it the torch build that fits the machine (CUDA
# where an NVIDIA GPU answers, else the small CPU build), then this package. Run it again at any time: what is
# installed already is kept. Arguments after the verb go to `emdenoise demo` or to pytest.
set -euo pipefail
cd "$(dirname "$0")"

verb="${1:-}"
case "$verb" in
    demo | test) shift ;;
    *) echo "usage: ./quickstart.sh demo|test [arguments for emdenoise demo or pytest]" >&2; exit 2 ;;
esac

say() { echo "quickstart: $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_install() {  # Debian/Ubuntu packages, as root or through sudo; elsewhere, say what is missing
    if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
        say "installing system packages: $*"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    else
        say "please install these system packages (or their equivalents): $*"
        return 1
    fi
}

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || apt_install python3 python3-venv
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    say "Python 3.10 or newer is needed; $PY is $("$PY" --version 2>&1)"; exit 1
fi
if [ ! -x .venv/bin/python ]; then
    say "making the virtual environment .venv"
    "$PY" -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv && "$PY" -m venv .venv; }
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip

if ! python -c "import torch" 2>/dev/null; then
    if [ "$(uname -s)" = Linux ] && ! nvidia-smi >/dev/null 2>&1; then
        say "no NVIDIA GPU: installing the CPU build of torch"
        python -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
            || python -m pip install -q torch==2.13.0
    else
        say "installing torch (with CUDA where there is an NVIDIA GPU)"
        python -m pip install -q torch==2.13.0
    fi
fi

if [ "$verb" = demo ]; then
    say "installing napari-emdenoise"
    python -m pip install -q -e .
    exec emdenoise demo "$@"
fi

say "installing napari-emdenoise with its test tools and napari"
python -m pip install -q -e ".[testing]"
if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && ! command -v Xvfb >/dev/null; then
    # napari's canvas needs OpenGL on a (virtual) display; pytest-xvfb starts Xvfb for the napari tests
    apt_install xvfb xauth libgl1 libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 \
        libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0 \
        libfontconfig1 libdbus-1-3 \
        || { say "no display and no Xvfb: running the tests without napari windows (-m 'not gui')"
             exec python -m pytest -m "not gui" "$@"; }
fi
exec python -m pytest "$@"
