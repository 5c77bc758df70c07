"""The YAML reader: documents from untrusted text, with limits.

``safe`` loads any YAML under a node budget (no expansion bombs, no tags that build objects);
``plain`` is the fast path for the plain subset most workflows are written in. Everything that
reads YAML (workflow specs, policies, the settings file) reads it here.
"""
