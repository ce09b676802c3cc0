"""The models imagegen trains; `imagegen.registry` maps their names to specs."""
