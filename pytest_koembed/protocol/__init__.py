"""What the leaderboard defines: suites, value rules, averages, published tables, instructions."""
