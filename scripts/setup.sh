#!/usr/bin/env bash
# Sets up tinyvla_jax on a fresh Debian or Ubuntu machine, as root or as a user with sudo:
#   bash scripts/setup.sh          # what the main job needs: the package + the `sim` extra (MetaWorld, MuJoCo),
#                                  # the `serve` extra (the policy server) and `lerobot` (LeRobot datasets)
#   bash scripts/setup.sh test     # everything the test suite uses (+ the test, parity and pretrained extras)
#   bash scripts/setup.sh bench    # a separate .venv-bench with LeRobot (and the torch it needs) beside the
#                                  # package, for scripts/benchmark_peer.py and `pytest -m bench`
# It installs the system packages (apt-get update first; sudo only when not root), makes a virtual
# environment (Debian/Ubuntu's system Python refuses `pip install`, PEP 668) and installs the project
# into it, editable. Then use .venv/bin/python (or `. .venv/bin/activate`).
# Environment: VENV (default .venv); MUJOCO_GL=egl installs libegl1 instead of OSMesa (GPU rendering;
# MuJoCo then needs MUJOCO_GL=egl at run time too; the default, osmesa, renders on the CPU, no display).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-run}"
case "$what" in run|test|bench) ;; *) echo "usage: bash scripts/setup.sh [run|test|bench]" >&2; exit 2 ;; esac
default_venv=.venv
[ "$what" = "bench" ] && default_venv=.venv-bench
VENV="${VENV:-$default_venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
  echo "error: tinyvla_jax needs Python >= 3.11 as python3 (found: $(python3 --version 2>&1))" >&2; exit 1; }

gl_package=libosmesa6
[ "${MUJOCO_GL:-osmesa}" = "egl" ] && gl_package=libegl1
packages=("$gl_package")
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=("python3-venv")
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "error: install ${missing[*]} with your system's package manager, then re-run" >&2; exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: run as root or install sudo (needs: ${missing[*]})" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
if [ "$what" = "test" ]; then
  # torch first, pinned exactly (the `parity` extra's reference implementations): a looser pin, or
  # transformers pulling it in, may fetch a multi-GB CUDA build on a CPU machine.
  "$VENV/bin/python" -m pip install -q 'torch==2.13.0'
  "$VENV/bin/python" -m pip install -q -e '.[test,sim,serve,parity,pretrained,lerobot]'
  # openpi's client, which the serving tests drive our server with. Without its dependencies: it pins
  # numpy<2, which would pull JAX back to 0.7; what it needs (msgpack, websockets, pillow) is installed above.
  "$VENV/bin/python" -m pip install -q --no-deps 'openpi-client==0.1.2'
elif [ "$what" = "bench" ]; then
  # LeRobot's Diffusion Policy U-Net, importable beside JAX. lerobot pins torch < 2.11 and dozens of robot and
  # logging packages, none of which its policy modules need at import time: it goes in without its
  # dependencies, followed by what `lerobot.policies.diffusion.modeling_diffusion` imports. torch and
  # torchvision are a matching pair from PyPI (the CUDA build, several GB, also on a CPU machine).
  "$VENV/bin/python" -m pip install -q -e . 'torch==2.14.1' 'torchvision==0.29.1' 'diffusers>=0.27.2,<0.36' \
    'einops>=0.8' 'draccus==0.10.0' 'datasets>=4,<5' 'huggingface-hub>=0.34,<0.36' 'accelerate>=1.10' \
    'pyserial>=3.5' 'deepdiff>=7' 'termcolor>=2.4' 'jsonlines>=4' 'gymnasium>=1.1' 'av>=15' 'torchcodec' \
    'opencv-python-headless' 'imageio[ffmpeg]' pytest
  "$VENV/bin/python" -m pip install -q --no-deps 'lerobot==0.4.4'
  "$VENV/bin/python" -c "from lerobot.policies.diffusion.modeling_diffusion import DiffusionConditionalUnet1d"
else
  "$VENV/bin/python" -m pip install -q -e '.[sim,serve,lerobot]'
fi
"$VENV/bin/python" -c "import jax, flax, optax; print('ready:', '$VENV', 'jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
