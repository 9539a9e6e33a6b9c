"""Provider adapters: plain Python, no Django. They take plain data and return plain data."""
