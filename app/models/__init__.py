"""Models: backbones, where the blocks go in them, and loading (built-in names, users' factories, weights)."""
from .loading import (
                      BlockInfo,
                      LoadedModel,
                      ModelLoadError,
                      imagenet_labels,
                      load_model,
                      load_trained_blocks,
                      read_state_dict,
                      resolve_device,
)

__all__ = ["BlockInfo", "LoadedModel", "ModelLoadError", "imagenet_labels", "load_model", "load_trained_blocks",
           "read_state_dict", "resolve_device"]
