"""Evaluation: the lm-eval model `hunyuan` (lm.py), perplexity, the shipped offline tasks, `hunyuan eval`."""
