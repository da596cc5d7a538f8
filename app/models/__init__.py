"""Models: backbones, where the blocks go in them, and loading (built-in names, users' factories and
checkpoints), with how each model's input is made (``inputs``) and its output read (``outputs``)."""
from .inputs import InputGeometry, InputRecipe
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
from .options import ModelOptions, ModelSpec
from .outputs import Detections

__all__ = ["BlockInfo", "Detections", "InputGeometry", "InputRecipe", "LoadedModel", "ModelLoadError", "ModelOptions",
           "ModelSpec", "imagenet_labels", "load_model", "load_trained_blocks", "read_state_dict", "resolve_device"]
