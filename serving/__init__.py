"""Serving: what applications call instead of a provider (issue 15). For now its application
keys: per-project, hashed, expiring, revocable, rate-limited."""
