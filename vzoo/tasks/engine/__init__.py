"""What every task's training run shares: the runner (atomic checkpoints, safe resume, strict
checkpoint check), its hooks, and the start-up code of ``tools/train.py`` / ``tools/test.py``."""
from .checkpoint import (  # noqa: F401
    atomic_torch_save, find_resume_checkpoint, load_runner_checkpoint, runner_checkpoint_globals,
    trusted_runner_globals)
from .hooks import CurvePlotHook, ResumeStateHook, SafeCheckpointHook  # noqa: F401
from .runner import VZOO_HOOKS, VZooRunner  # noqa: F401
from .startup import (  # noqa: F401
    ConfigKeyError, DataFileError, DatasetPathError, StartupError, build_runner, check_cfg_options,
    check_checkpoint_arg, check_dataset_paths, check_input_files, check_train_batches, pretrained_refs, run_cli,
    setup_cfg, tool_parser)
