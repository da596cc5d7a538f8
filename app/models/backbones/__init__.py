"""Backbones attnlens can augment with blocks: EfficientNet-Lite0 (embedded default) and ResNets."""
