"""A unified privacy-and-efficiency benchmark suite.

Tasks register by name (``suite.task.register_task``), runners execute them and log
utility, privacy, compute and bandwidth metrics to MLflow, and the leaderboard renders
the finished runs into a static site.
"""

__version__ = "0.1.0"
