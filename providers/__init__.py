"""Provider adapters: plain Python, no Django. They take plain data and return plain data."""

from providers.openmp import choose_before_torch_loads

# How torch's threads wait is read once, when torch loads; it is chosen then (openmp.py).
choose_before_torch_loads()
