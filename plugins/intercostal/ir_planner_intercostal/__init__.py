"""IR Planner plugin: the intercostal-bundle risk term and constraint (see ``plugin.toml``)."""
