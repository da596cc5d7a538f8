"""Training and evaluation of the default model's blocks: composites, ``attnlens train``, ``attnlens eval``."""
