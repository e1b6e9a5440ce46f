"""A circuit's graph for people (torch-free but ``show``): the core view and the full graph,
laid out left to right and drawn as inline SVG; ``show`` renders them (and an explain card)
in a notebook."""
