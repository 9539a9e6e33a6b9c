"""Benchmarks, each run as a script: python bench/<name>.py."""
