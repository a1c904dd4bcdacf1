"""Builds the cffi extension ``asyncopy._libiscsi``; everything else is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["asyncopy/_iscsi_build.py:ffi"])
