"""Studies built on ``sparse_lens`` and ``hooks``: attention sinks, patching, circuit reports.

Each analysis is a function returning data; commands that write pages build on those functions.
"""
