"""Validation, token counting and quality analyzers for chat fine-tuning data.

Plain Python and numpy, no Django: the services feed in message lists and get back findings
and statistics, so the same code checks live examples, frozen versions and benchmark data.
"""
