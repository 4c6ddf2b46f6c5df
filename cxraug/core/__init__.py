"""What every stage shares: the manifest, the workspace layout (every path of the workspace and
its run folders), the preprocessed dataset, image decoding/encoding, atomic writes, errors,
console output, option metadata, the process pool and TensorFlow's start-up. Imports nothing
from the rest of cxraug."""
