"""What every task's training run shares: the runner (atomic checkpoints, safe resume, strict
checkpoint check), the curve hook, and the start-up checks of ``tools/train.py`` / ``tools/test.py``."""
from .checkpoint import (  # noqa: F401
    CheckpointMismatchError, atomic_torch_save, atomic_write_text, check_state_dict_matches, find_resume_checkpoint,
    load_runner_checkpoint, runner_checkpoint_globals, trusted_runner_globals)
from .hooks import CurvePlotHook  # noqa: F401
from .runner import VZooRunner  # noqa: F401
from .startup import StartupError, ConfigKeyError, DatasetPathError, check_cfg_options, check_dataset_paths  # noqa: F401
