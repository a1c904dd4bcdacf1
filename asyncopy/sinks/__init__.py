"""Endpoints that are written: one module per kind."""
