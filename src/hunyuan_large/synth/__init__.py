"""Synthetic instruction data: the paper's 4-step pipeline (generate, evolve, respond, filter) as resumable stages."""
