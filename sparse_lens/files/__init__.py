"""Files: atomic writes, output-folder claims and fault points for the kill tests."""
