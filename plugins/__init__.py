"""The built-in plugins: ordinary pluggy plugins, listed in pipeline.registry.DEFAULT_PLUGINS."""
