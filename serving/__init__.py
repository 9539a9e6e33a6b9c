"""Serving: what applications call instead of a provider (issue 15). Its application keys
(per-project, hashed, expiring, revocable, rate-limited) and the OpenAI-compatible gateway at
/v1/ that serves a project's promoted versions with them."""
