"""Configuration: YAML with positions -> schema and semantic validation -> typed models ->
inheritance -> selectors.

Import from the submodules: ``loader`` (load_profile, load_node_config, ProfileLibrary,
validate_files), ``resolve`` (resolve, resolve_profiles), ``selectors`` (matches,
InterfaceFacts), ``model`` and ``vocabulary``. This package module imports nothing, so
``import nodenetd.config.model`` stays cheap.
"""
