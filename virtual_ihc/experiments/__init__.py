"""Experiments built on training and evaluation: the paper's ablation."""
