"""Programs per language for the suites that run every language of the catalogue."""
