"""Reviewing examples: the queue, votes, decisions, bulk actions and comments (`services`,
`selectors`), the review pages (`views`), agreement between reviewers (`agreement`) and the
guidelines' markdown (`markdown`)."""
