"""The one place edgeq's version is written (every module that stamps results imports it here)."""
__version__ = "0.1.0"
