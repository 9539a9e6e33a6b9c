"""Costs: the ledger every spend is written to (issue 16), the top of the layers. Training,
evaluation, judging and serving report their spends through ``ftportal.spending``; this app
stores them, one append-only row each."""
