"""Analysis of finished runs: tables, statistics and plots."""
