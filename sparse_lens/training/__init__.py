"""Training: the sparse trainer, the dense baseline, schedules, presets and resumable loop state."""
