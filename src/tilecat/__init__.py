"""tilecat: multi-band sky-survey images to AI-enriched galaxy catalogs."""

__all__ = ["__version__"]

__version__ = "0.1.0"
