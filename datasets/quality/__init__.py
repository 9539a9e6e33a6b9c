"""Quality analysis of chat fine-tuning data.

The analyzers (`validation`, `tokens`, `stats`, `findings`, `minhash`, `overlap`, `report`,
`analyzers`) are plain Python and numpy, no Django: the services feed in message lists and get
back findings and statistics, so the same code checks live examples, frozen versions and
benchmark data. The Django side is `services` and `selectors` (analysis runs, their findings,
readiness), with the pages in `views` and the API in `api`.
"""
