# Sourced by run.sh and families.sh: the output folder, and diffusers from the carried wheel where the machine lacks it.
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
