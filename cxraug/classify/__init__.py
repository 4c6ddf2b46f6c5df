"""The machinery of `cxraug evaluate`: the classifier (net), what an arm does to its training
batches (augment), the scoring maths (stats) and the figures (plots)."""
