"""Generators of small synthetic datasets for the laptop-sized transfers, written in real layouts."""
