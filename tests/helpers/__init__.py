"""Reusable test fixtures: loopback servers and helpers shared by the test suites."""
