"""Training: the one training loop (``loop.py``), the sparse trainer, the dense baseline, schedules and presets."""
