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
set -euo pipefail
: "${COHEN:?set COHEN to your covid-chestxray-dataset checkout}"
: "${KERMANY:?set KERMANY to your Kaggle chest_xray folder}"
WS=${WS:-paper-workspace}
SEED=${SEED:-0}
ITERATIONS=${ITERATIONS:-10000}

sources=("cohen:$COHEN" "kermany:$KERMANY")
[ -n "${NIH:-}" ] && sources+=("nih=folder:$NIH")

# 1. Setup phase: record the sources (frontal COVID-19 X-rays vs normal), split by patient.
[ -f "$WS/manifest.csv" ] ||
  cxraug collect "${sources[@]}" -w "$WS" --seed "$SEED" --test-fraction 0.2
# 2. Pre-processing phase: the paper crops by hand. Get a first guess, review the contact
#    sheet, edit boxes.csv, then build the 224x224 array in [-1, 1].
if [ ! -f "$WS/boxes.csv" ]; then
  cxraug preprocess -w "$WS" --suggest-crops "$WS/boxes.csv" --contact-sheet "$WS/boxes.png"
  echo "Review $WS/boxes.png and edit $WS/boxes.csv, then run this script again."
  exit 0
fi
cxraug preprocess -w "$WS" --crop-boxes "$WS/boxes.csv"
# 3. Augmentation phase: the paper's CGAN (Table 2 defaults), then balance the classes.
# Ctrl-C saves a checkpoint; running this script again resumes the run where it stopped.
if [ -d "$WS/runs/paper" ]; then
  cxraug train -w "$WS" --resume paper --iterations "$ITERATIONS"
else
  cxraug train -w "$WS" --name paper --epochs "$ITERATIONS" --seed "$SEED"
fi
cxraug generate -w "$WS" --run paper --class covid --balance --seed "$SEED" --force
# The paper removed noisy images by eye; filter does it reproducibly, with reasons.
cxraug filter -w "$WS" --class covid --seed "$SEED"
# 4. Evaluation phase: FID (+ KID, precision/recall, real-vs-real baseline) against the
#    HELD-OUT real COVID images, which the GAN never saw.
weights=()
[ -n "${WEIGHTS:-}" ] && weights=(--weights "$WEIGHTS")
cxraug fid manifest:split=test,label=covid manifest:synthetic=true,label=covid -w "$WS" \
  "${weights[@]}" --seed "$SEED" --out "$WS/fid.json"
