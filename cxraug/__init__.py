"""cxraug: grow the scarce class of a chest X-ray dataset with a conditional GAN.

Pipeline (one module per stage, one shared manifest):
sources -> collect -> manifest.csv -> preprocess -> processed/dataset.npz -> train -> runs/NAME
-> generate -> synthetic/ PNGs + manifest rows -> filter -> manifest statuses -> fid -> report.
"""

__version__ = "0.1.0"
