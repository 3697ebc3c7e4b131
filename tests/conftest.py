"""Shared pytest configuration: the real control plane and the provider simulator."""

pytest_plugins = ["tests.harness.plugin", "tests.harness.simulator_fixtures"]
