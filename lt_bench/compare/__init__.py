"""Comparing runs: the leaderboard, the picture, studies of a paper's tables."""
