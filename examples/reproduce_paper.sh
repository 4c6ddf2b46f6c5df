#!/usr/bin/env bash
# Reproduce the paper's pipeline (Mohammed & Ali 2022) on the real public datasets, once you
# have downloaded them (see docs/datasets.md for where, and under which licences):
#
#   COHEN    a checkout of github.com/ieee8023/covid-chestxray-dataset
#   KERMANY  the Kaggle "Chest X-Ray Images (Pneumonia)" folder (chest_xray/)
#   NIH      optional: a folder with a normal/ sub-folder of NIH ChestX-ray8 "No Finding" images
#   WEIGHTS  optional: inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 for a real FID
#
# Usage: COHEN=~/data/covid-chestxray-dataset KERMANY=~/data/chest_xray \
#        [NIH=~/data/nih] [WEIGHTS=~/inception.h5] [WS=paper-workspace] [SEED=0] \
#        examples/reproduce_paper.sh
# The paper trains 10,000 iterations ("epochs") of batch 128: ~3 h on a laptop CPU, minutes on
# a data-centre GPU. Set ITERATIONS to shorten it.
#
# Other settings (environment variables; the defaults are the paper's):
#   SOURCES        collect sources, space-separated, instead of COHEN/KERMANY/NIH
#                  (e.g. "folder:/data/phantoms")
#   SIZE           preprocess --size (224)            TEST_FRACTION  collect's (0.2)
#   TRAIN_ARGS     extra `cxraug train` options, space-separated (e.g. "--batch-size 8")
#   FEATURES       fid --features: inception (a standard FID) or random (smoke tests only)
#   FID_FAKE       fid's FAKE set (manifest:synthetic=true,label=covid: the images filter
#                  kept; add ,status=any to score every generated one)
#   CXRAUG         the command to run (default: cxraug; e.g. "python -m cxraug")
#
# Run it again at any point: every step is skipped or resumed when its output is there. A step
# that finishes with some rows failed (exit 1: they are in the manifest with a reason) does not
# stop the script; any other failure does. On a re-run, generate and fid replace their own
# earlier outputs (--force): generate the images of this run and seed, fid the fid.json report.
set -euo pipefail
WS=${WS:-paper-workspace}
SEED=${SEED:-0}
ITERATIONS=${ITERATIONS:-10000}
SIZE=${SIZE:-224}
TEST_FRACTION=${TEST_FRACTION:-0.2}
FEATURES=${FEATURES:-inception}
FID_FAKE=${FID_FAKE:-manifest:synthetic=true,label=covid}
read -r -a cx <<< "${CXRAUG:-cxraug}"
read -r -a train_args <<< "${TRAIN_ARGS:-}"

if [ -n "${SOURCES:-}" ]; then
  read -r -a sources <<< "$SOURCES"
else
  : "${COHEN:?set COHEN to your covid-chestxray-dataset checkout (or SOURCES)}"
  : "${KERMANY:?set KERMANY to your Kaggle chest_xray folder (or SOURCES)}"
  sources=("cohen:$COHEN" "kermany:$KERMANY")
  if [ -n "${NIH:-}" ]; then sources+=("nih=folder:$NIH"); fi
fi

# Exit 1 = "some rows failed": go on; anything else stops (examples/_common.sh).
source "$(dirname "$0")/_common.sh"

# 1. Setup phase: record the sources (frontal COVID-19 X-rays vs normal), split by patient.
if [ ! -f "$WS/manifest.csv" ]; then
  partial_ok "${cx[@]}" collect "${sources[@]}" -w "$WS" --seed "$SEED" \
    --test-fraction "$TEST_FRACTION"
fi
# 2. Pre-processing phase: the paper crops by hand. Get a first guess, review the contact
#    sheet, edit boxes.csv, then build the SIZE x SIZE array in [-1, 1].
if [ ! -f "$WS/boxes.csv" ]; then
  partial_ok "${cx[@]}" preprocess -w "$WS" --suggest-crops "$WS/boxes.csv" \
    --contact-sheet "$WS/boxes.png" --force
  echo "Review $WS/boxes.png and edit $WS/boxes.csv, then run this script again."
  exit 0
fi
partial_ok "${cx[@]}" preprocess -w "$WS" --crop-boxes "$WS/boxes.csv" --size "$SIZE"
# 3. Augmentation phase: the paper's CGAN (Table 2 defaults), then balance the classes.
# Ctrl-C saves a checkpoint; running this script again resumes the run where it stopped.
if [ -d "$WS/runs/paper" ]; then
  "${cx[@]}" train -w "$WS" --resume paper --iterations "$ITERATIONS"
else
  # --recipe paper: the paper's MLP CGAN exactly (`cxraug train` alone runs the conv recipe)
  "${cx[@]}" train -w "$WS" --name paper --recipe paper --epochs "$ITERATIONS" --seed "$SEED" \
    ${train_args[@]+"${train_args[@]}"}
fi
"${cx[@]}" generate -w "$WS" --run paper --class covid --balance --seed "$SEED" --force
# The paper removed noisy images by eye; filter does it reproducibly, with reasons.
"${cx[@]}" filter -w "$WS" --class covid --seed "$SEED"
# 4. Evaluation phase: FID (+ KID, precision/recall, real-vs-real baseline) against the
#    HELD-OUT real COVID images, which the GAN never saw.
weights=()
if [ -n "${WEIGHTS:-}" ]; then weights=(--weights "$WEIGHTS"); fi
"${cx[@]}" fid manifest:split=test,label=covid "$FID_FAKE" -w "$WS" \
  ${weights[@]+"${weights[@]}"} --features "$FEATURES" --seed "$SEED" \
  --out "$WS/fid.json" --force
