"""The shared training engine: trainer loop, optimizers and schedules, checkpoint I/O."""
