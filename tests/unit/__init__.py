"""Unit tests: a package, so that its conftest and the integration tests' are two modules to mypy."""
