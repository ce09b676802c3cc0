"""imagegen: train, sample, evaluate and convert image generative models."""

__version__ = "0.1.0"
