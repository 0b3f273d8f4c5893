"""Readers that turn cluster traces and manifests into model nodes and requests."""
