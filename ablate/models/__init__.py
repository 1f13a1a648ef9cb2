"""The seed's architecture and members as torch modules: build, load, save, count; device, threads, GGUF import.

Imports core, store and data (a member's architecture is the seed's, its vocabulary the study tokenizer's).
"""

from ablate.models.device import eval_precision, gpu_count, precision_context, resolve_device, worker_devices
from ablate.models.gguf import import_gguf
from ablate.models.model import (check_fit, check_weights_file, count_params, dropout_of, find_seed, load_member,
                                 load_state, model_from_config, save_weights, seed_config, unique_state, versions)
from ablate.models.threads import claim, machine_cores, release

__all__ = ["model_from_config", "seed_config", "find_seed", "load_member", "load_state", "save_weights",
           "count_params", "check_fit", "check_weights_file", "unique_state", "dropout_of", "versions",
           "resolve_device", "eval_precision", "precision_context", "gpu_count", "worker_devices", "import_gguf",
           "claim", "release", "machine_cores"]
