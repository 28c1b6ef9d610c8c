#!/usr/bin/env bash
# tests/torture/run.sh: allocation-failure torture (see mk/torture.mk and
# tests/torture/torture.py). Build first with `make torture-build`, or just
# run `make torture`.
#   bash tests/torture/run.sh [--build build/torture] [--units "linebuf ..."]
#        [--only NAME] [--max-points N] [--jobs J] [--timeout S] [-v]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/torture.py" "$@"
