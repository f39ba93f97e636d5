#!/usr/bin/env bash
# The main job: set up .venv, then `camp run` = fetch -> train -> export -> detect -> evaluate.
# With no arguments it maps buildings on a public OpenAerialMap survey with OpenStreetMap labels
# (needs internet). Any `camp run` option can be passed, e.g. the offline form:
#   bash scripts/main.sh --imagery 'file:///path/tiles/{z}/{x}/{y}.png' --labels labels.geojson \
#       --bbox W,S,E,N --zoom 21 --out projects/demo
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
args=("$@")
case " $* " in *" --out "*|*" --out="*) ;; *) args+=(--out projects/demo) ;; esac
exec .venv/bin/camp run "${args[@]}"
