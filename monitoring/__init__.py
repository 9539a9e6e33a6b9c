"""Watching what production serves: its figures over time, drift against the served version's
training data, alert rules and their notifications, lifecycle countdowns and retraining
proposals (issue 17)."""
