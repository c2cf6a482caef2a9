"""Inference: whole-image and whole-slide virtual staining."""
