"""Measuring images: the Inception network and its protocols, reference features, the
metrics (FID, KID, precision/recall, ...) registered by name, and the `eval` command."""
