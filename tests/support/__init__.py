"""Helpers shared by the test folders (unit, live, e2e); fixtures load via tests/conftest.py.

Each module has one job, so a test imports what it uses: ``from support.client import
ChatClient``. The ``tests`` directory is on pytest's ``pythonpath`` (pyproject.toml).
"""
