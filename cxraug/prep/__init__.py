"""The machinery of `collect` and `preprocess`: source readers, file inspection, loading the
manifest's images, crop boxes, contact sheets, and the synthetic phantoms of the demo and tests.
Imports only `cxraug.core`."""
