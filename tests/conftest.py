"""Shared pytest configuration: the real control plane, the provider simulator, the operator."""

pytest_plugins = [
    "tests.harness.plugin",
    "tests.harness.simulator_fixtures",
    "tests.harness.operator_fixtures",
    "tests.harness.world",
]
