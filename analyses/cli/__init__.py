"""The `sparse-lens` command: every subcommand, organised by what a user types."""
