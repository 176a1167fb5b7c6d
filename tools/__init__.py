"""Developer tools (packaging); not part of the plugin or the backend."""
