"""IR Planner plugin: an example site's device catalog (see ``plugin.toml``)."""
