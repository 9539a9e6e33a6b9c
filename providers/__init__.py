"""Provider adapters: plain Python, no Django. They take plain data and return plain data."""

from providers.openmp import openmp_waiting

# Before torch loads anywhere in this process: how its threads wait is read once, then.
openmp_waiting()
