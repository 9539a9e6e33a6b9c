"""Provider adapters: plain Python, no Django. They take plain data and return plain data."""

import os

# OpenMP threads spin while they wait by default; when a worker shares the cores with a web
# server or another worker, that spinning made torch about 4x slower here (measured: 12 tokens
# in 6.7 s spinning, 1.55 s passive). It must be set before torch loads, hence here; an explicit
# setting in the environment still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
