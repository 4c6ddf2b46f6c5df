"""The machinery of `train` and `generate`: TrainConfig and its recipes, the architectures
(`arch`: a registry of networks, steps and FLOP counts; `mlp` is the paper's MLP CGAN, `conv`
the default recipe's networks), the run's state and compiled step, the training loop, hardware
facts, checkpoints and what a run logs. Imports `cxraug.core`, and (scoring only) the filter's
decision core in `cxraug.quality` and KID in `cxraug.metrics`: docs/architecture.md."""
