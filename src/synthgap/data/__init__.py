"""Datasets: on-disk formats, sources with download code, splits, and the processed files."""

from synthgap.data.processed import ProcessedData, load_info, load_processed, save_processed
from synthgap.data.sources import ImageDataset, load_dataset

__all__ = ["ImageDataset", "ProcessedData", "load_dataset", "load_info", "load_processed", "save_processed"]
