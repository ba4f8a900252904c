"""Models: the ONNX runtime, model bundles with their reference profiles, and the
training and export of the reference champion and challenger."""
