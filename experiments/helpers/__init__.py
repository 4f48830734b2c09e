"""Helpers the experiments share: running train.py, the real corpora's settings, result tables."""
