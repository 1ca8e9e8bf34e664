#!/usr/bin/env bash
# Run benchmarks/calibration_speed.py in the benchmark's own virtualenv.
# MAPIE is not a dependency of racer, so it lives in benchmarks/.venv-mapie together with
# an editable install of this repository. Arguments are passed on to the script, e.g.
#   benchmarks/run_calibration_speed.sh --sizes 10000 100000
# Set PYTHON to choose the interpreter that creates the virtualenv (default: python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="$here/.venv-mapie"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import mapie.risk_control, racer" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet "mapie>=1.0"
    "$venv/bin/python" -m pip install --quiet -e "$repo"
fi
exec "$venv/bin/python" "$here/calibration_speed.py" "$@"
