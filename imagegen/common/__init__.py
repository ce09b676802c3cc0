"""What every stage shares and nothing else: errors, the option plumbing of the configs,
where files live, atomic writes, JSON lines, progress events, devices and precision.
Imports nothing else of imagegen."""
