"""OpenAI's released circuit_sparsity models, tokenizer files and circuits, imported."""
