"""Bridges between the sparse model and a dense TransformerLens model."""
