"""The shared training engine: the trainer (loop + optimisation step), its state, callbacks, loggers,
optimizers and schedules, checkpoint I/O and distributed helpers (see docs/DESIGN.md)."""
