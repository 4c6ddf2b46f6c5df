"""The machinery of `fid`: input image sets, feature extractors, and the distances (FID, KID,
precision/recall). Imports only `cxraug.core`."""
