"""Helpers the tests import: servers, deployments, hostile files, tiny models.

Plain modules on ``pythonpath`` (``pyproject.toml``), imported as ``support.<module>``;
``conftest.py`` files hold only fixtures, so any subset of test files collects alone.
"""
