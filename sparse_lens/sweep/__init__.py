"""The capability-interpretability frontier: grids of training runs and their circuit sizes."""
