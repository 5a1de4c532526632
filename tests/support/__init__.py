"""Test doubles shared by the unit and integration suites."""
