#!/usr/bin/env bash
# Build the evaluation workspace with an external test source, in one command: the four shared
# sources (as in the paper) for training and internal testing, plus the Actualmed/UJI images
# (another hospital, both classes) as a test-only source that no stage trains, calibrates or
# selects on, then preprocess. `cxraug evaluate -w WORKSPACE` then scores on both.
#
# Usage: examples/collect_external.sh WORKSPACE SHARED_DATA_DIR
#   SHARED_DATA_DIR holds cohen-covid-chestxray/, kermany-chest-xray/,
#   folders/{kermany-reencoded,nih-nofinding}/ and external/actualmed/ (metadata.csv + images/),
#   as ../shared/cxr-data does (see its README.md and docs/datasets.md).
#
# Settings (environment variables):
#   CXRAUG           the command to run (default: cxraug; e.g. "python -m cxraug")
#   COLLECT_ARGS     extra `cxraug collect` options, space-separated (e.g. "--workers 1")
#   PREPROCESS_ARGS  extra `cxraug preprocess` options (e.g. "--size 64")
#
# Run it again at any time: collect then rebuilds the manifest with --force (keeping your crop
# boxes, label corrections and exclusions; the old one is saved as manifest.csv.bak) and
# preprocess redoes only what changed. A step that finishes with some rows failed (exit 1: they
# are in the manifest with a reason) does not stop the script; any other failure does.
set -euo pipefail
if [ "$#" -ne 2 ]; then
  echo "usage: $0 WORKSPACE SHARED_DATA_DIR" >&2
  exit 2
fi
WS=$1
S=$2
read -r -a cx <<< "${CXRAUG:-cxraug}"
read -r -a collect_args <<< "${COLLECT_ARGS:-}"
read -r -a preprocess_args <<< "${PREPROCESS_ARGS:-}"

# Exit 1 = "some rows failed": go on; anything else stops (examples/_common.sh).
source "$(dirname "$0")/_common.sh"

force=()
if [ -f "$WS/manifest.csv" ]; then force=(--force); fi
# Actualmed is one case of the csv: source: its metadata.csv names the files (imagename, in
# images/), the finding, the patient and the view; blank findings are excluded with a reason.
partial_ok "${cx[@]}" collect -w "$WS" \
  "cohen:$S/cohen-covid-chestxray" "kermany:$S/kermany-chest-xray" \
  "folder:$S/folders/kermany-reencoded" "nih=folder:$S/folders/nih-nofinding" \
  "actualmed=csv:$S/external/actualmed/metadata.csv" \
  --csv-file-column imagename --csv-images images --csv-label-column finding \
  --csv-classes "COVID-19=covid,No finding=normal" --csv-patient-column patientid \
  --csv-view-column view --test-only actualmed --seed 0 \
  ${force[@]+"${force[@]}"} ${collect_args[@]+"${collect_args[@]}"}
partial_ok "${cx[@]}" preprocess -w "$WS" ${preprocess_args[@]+"${preprocess_args[@]}"}
