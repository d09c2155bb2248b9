"""The project's own synthetic sample case and the registry of public datasets."""
