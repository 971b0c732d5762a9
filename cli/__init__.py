"""The ``suite`` command line: the one layer that may import every other (core, runners, leaderboard)."""
