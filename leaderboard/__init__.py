"""MLflow runs -> pandas -> a static leaderboard site."""
