"""Files: atomic writes, output-folder claims, fault points for the kill tests, JSON-lines reading."""
