"""The machinery of `filter`: the decision core, per-image quality scores, the shared
downsample/unit-vector maths, nearest-real search and the filter's contact sheet. Imports only
`cxraug.core`."""
