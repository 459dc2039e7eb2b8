"""Losses and evaluation metrics, one module per task family."""
