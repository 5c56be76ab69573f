"""synthgap: measure and close the gap between synthetic and real training data."""

__version__ = "0.1.0"
