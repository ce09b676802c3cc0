"""What is written to disk and read back: the safetensors checkpoint, the run folder, and
conversion from and to foreign formats."""
