"""Training a model: the run's options (TrainConfig), its resolution into a plan, the loop,
the EMA, health alarms, distributed processes, the FID monitor and TensorBoard."""
