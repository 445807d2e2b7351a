"""Base models as users name them: where their files are and what their config says.

Nothing here loads weights (that is the worker's ``loading``): the API reads a model's depth
from its config at submission, the command line checks a name before a long load.
"""

from frankensweep.models.config import (
    LAYER_CONFIG,
    config_mismatches,
    read_config,
    read_num_layers,
    read_tokenizer,
)
from frankensweep.models.fingerprint import model_fingerprint
from frankensweep.models.load import (
    DTYPE_NAMES,
    QUANTIZATIONS,
    LoadOptions,
    LoadOptionsError,
    check_checkpoint,
    check_environment,
    default_load,
    load_options,
    parse_max_memory,
)
from frankensweep.models.spec import (
    SUPPORTED_MODEL_TYPES,
    ModelLoadError,
    is_gguf,
    resolve_spec,
    smollm2_path,
)

__all__ = [
    "DTYPE_NAMES",
    "LAYER_CONFIG",
    "QUANTIZATIONS",
    "SUPPORTED_MODEL_TYPES",
    "LoadOptions",
    "LoadOptionsError",
    "ModelLoadError",
    "check_checkpoint",
    "check_environment",
    "config_mismatches",
    "default_load",
    "is_gguf",
    "load_options",
    "model_fingerprint",
    "parse_max_memory",
    "read_config",
    "read_num_layers",
    "read_tokenizer",
    "resolve_spec",
    "smollm2_path",
]
