"""The weight-sparse model: config, components, ``HookedSparseTransformer``, its caches and checkpoints."""
