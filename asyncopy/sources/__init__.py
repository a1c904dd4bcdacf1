"""Endpoints that are read: one module per kind."""
