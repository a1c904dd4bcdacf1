"""Builds the cffi extensions ``asyncopy.access._libiscsi`` and ``asyncopy.access._librbd``;
everything else is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["asyncopy/access/_iscsi_build.py:ffi", "asyncopy/access/_rbd_build.py:ffi"])
