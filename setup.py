"""Builds the cffi extensions ``asyncopy._libiscsi`` and ``asyncopy._librbd``; everything
else is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["asyncopy/_iscsi_build.py:ffi", "asyncopy/_rbd_build.py:ffi"])
