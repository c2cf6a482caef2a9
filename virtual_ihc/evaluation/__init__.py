"""Evaluation of trained runs."""
