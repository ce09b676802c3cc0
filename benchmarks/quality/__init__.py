"""bench_quality's modules, in the order a measurement flows: settings (the frozen protocol),
recipes, datasets, record, budget (equal time), measure, runner; then the report: tables,
sections, plots, report. benchmarks/bench_quality.py is the command line."""
