#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv (torch==2.13.0 as the Makefile installs it) and run
# `mmmamba distill --help` and a short `mmmamba demo` (named recipes from inside the package) from a
# directory outside the checkout:
#   bash .ci/wheel_smoke.sh [WORK_DIR]      (PY: the python that builds the wheel; default python3.11)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-python3.11}"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
echo "wheel smoke: building in $WORK"
rm -rf "$WORK/src" && mkdir -p "$WORK/src"  # a copy of the files git knows: no stale build/ output
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 tar cf -) | tar xf - -C "$WORK/src"
"$PY" -m pip wheel "$WORK/src" --no-deps --no-build-isolation -q -w "$WORK/dist"
WHEEL="$(ls "$WORK"/dist/mmmamba-*.whl)"
"$PY" -m venv --clear "$WORK/venv"
"$WORK/venv/bin/pip" install -q "torch==2.13.0" "$WHEEL" 2> >(grep -v "^WARNING: Location" >&2)
mkdir -p "$WORK/elsewhere"
cd "$WORK/elsewhere"
unset PYTHONPATH
"$WORK/venv/bin/python" - "$ROOT" <<'PY'
import sys
from pathlib import Path

import mmmamba_cli
from mmmamba_cli.recipe import RECIPE_DIRS, recipe_names

where = Path(mmmamba_cli.__file__).resolve()
assert Path(sys.argv[1]).resolve() not in where.parents, f"imported from the checkout: {where}"
assert {"demo", "easyvqa-stage1", "hovle-stage3", "teacher-easyvqa"} <= set(recipe_names()), recipe_names()
assert not RECIPE_DIRS[0].is_symlink(), "the wheel must carry the recipes, not a link"
print(f"installed package: {where.parent}; recipes: {', '.join(recipe_names())}")
PY
help="$("$WORK/venv/bin/mmmamba" distill --help)"
grep -q -- "--stage" <<<"$help" || { echo "mmmamba distill --help lacks --stage:"; echo "$help"; exit 1; }
"$WORK/venv/bin/mmmamba" demo --out demo "distill.overrides=[train.steps=2, train.save_every=0]" \
    eval.limit=16 bench.enabled=false
test -s demo/report.json
echo "wheel smoke: ok"
