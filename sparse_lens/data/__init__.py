"""Training data: the Python corpus, the tokenizer, token shards and generated idioms."""
