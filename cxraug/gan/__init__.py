"""The machinery of `train` and `generate`: TrainConfig, the networks (one module per
architecture: `models` is the paper's MLP CGAN), the compiled training step, hardware facts,
checkpoints and what a run logs. Imports `cxraug.core`, and (scoring only) the filter's
decision core in `cxraug.quality` and KID in `cxraug.metrics`: docs/architecture.md."""
