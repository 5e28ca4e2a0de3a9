"""Datasets, splits, audio decoding, feature extraction and caching, the DataModule."""
