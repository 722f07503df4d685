"""vzoo's model families, one module each. Importing this package registers them with timm."""
from ._builder import (  # noqa: F401
    CheckpointError, build_vzoo_model, check_state_dict, list_vzoo_models, load_checkpoint_file,
    model_family, unwrap_state_dict,
)

# one import per family module: registration happens at import (timm's @register_model)
