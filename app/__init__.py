"""attnlens application: model assembly, analysis engine, CLI (and, later, the web server)."""
__version__ = "0.1.0"
