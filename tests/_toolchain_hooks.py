"""Hooks the toolchain tests put into their configs (``custom_imports=['_toolchain_hooks']``)."""
import glob
import json
import os
import os.path as osp
import signal

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from vzoo.tasks.engine import SafeCheckpointHook
from vzoo.tasks.registry import HOOKS


@HOOKS.register_module(force=True)
class SaveRankWeightsHook(Hook):
    """After training, every process writes its own weights (and the world size) to the work dir."""
    priority = "LOWEST"

    def after_run(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(dict(world_size=get_world_size(), wrapped=type(runner.model).__name__,
                        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
                        params=[k for k, _ in model.named_parameters()]),
                   osp.join(runner.work_dir, f"weights_rank{get_rank()}.pt"))


class Interrupted(Exception):
    pass


@HOOKS.register_module(force=True)
class InterruptAfterEpochHook(Hook):
    """Stop the run the hard way after epoch ``epoch`` (after its checkpoint was written)."""
    priority = "LOWEST"

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.epoch:
            raise Interrupted(f"interrupted after epoch {self.epoch}")


# ------------------------------------------------------------------------------ fault injection
KILL_ENV = "VZOO_TEST_KILL_AT"  # "<stage>:<step>", e.g. "during_write:3"
KILL_STAGES = ("before_write", "during_write", "after_write", "before_remove", "during_remove")


@HOOKS.register_module(force=True)
class FaultyCheckpointHook(SafeCheckpointHook):
    """``SafeCheckpointHook`` that SIGKILLs its own process at stage ``<stage>`` of the save of step ``<step>``
    when ``$VZOO_TEST_KILL_AT`` says so (and behaves as ``SafeCheckpointHook`` otherwise):

    * ``before_write``: nothing of the new checkpoint written yet;
    * ``during_write``: half of the new checkpoint's bytes in its temporary file;
    * ``after_write``: the new file complete in place, ``last_checkpoint`` still names the previous one;
    * ``before_remove``: ``last_checkpoint`` names the new file, no old one removed yet;
    * ``during_remove``: the first of the old checkpoints removed.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        stage, _, step = os.environ.get(KILL_ENV, "").partition(":")
        assert stage in KILL_STAGES + ("",), stage
        self.kill_stage, self.kill_step, self.step = stage, int(step or -1), None

    def _kill_if(self, stage: str) -> None:
        if stage == self.kill_stage and self.step == self.kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def _save_checkpoint_with_step(self, runner, step, meta):
        self.step = step
        super()._save_checkpoint_with_step(runner, step, meta)
        self.step = None

    def _write(self, runner, filename, meta):
        self._kill_if("before_write")
        if self.kill_stage == "during_write" and self.step == self.kill_step:
            real_save = torch.save

            def save_half_then_die(obj, f, *args, **kwargs):  # mmengine saves into a BytesIO, then writes it
                real_save(obj, f, *args, **kwargs)
                data = f.getvalue()
                tmp, = glob.glob(osp.join(glob.escape(self.out_dir), f".{filename}.*.tmp"))
                with open(tmp, "wb") as fh:
                    fh.write(data[:len(data) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)

            torch.save = save_half_then_die  # this process dies inside it
        super()._write(runner, filename, meta)
        self._kill_if("after_write")

    def _remove_old(self, runner, steps):
        self._kill_if("before_remove")
        if self.kill_stage == "during_remove" and self.step == self.kill_step and steps:
            super()._remove_old(runner, steps[:1])
            os.kill(os.getpid(), signal.SIGKILL)
        super()._remove_old(runner, steps)


@HOOKS.register_module(force=True)
class BestOrderProbeHook(SafeCheckpointHook):
    """``SafeCheckpointHook`` that records, each time a best checkpoint is written, the best files on disk
    at that moment (``<work_dir>/best_writes.json``): the previous best must still be there. The score it
    passes on is the epoch (every evaluation a new best), so the run's replacements are deterministic."""

    def _save_best_checkpoint(self, runner, metrics):
        metrics = {key: float(runner.epoch) for key in metrics}
        save, log_path = runner.save_checkpoint, os.path.join(runner.work_dir, "best_writes.json")

        def probe(out_dir, filename, *args, **kwargs):
            if filename.startswith("best_"):
                log = json.load(open(log_path)) if os.path.isfile(log_path) else []
                log.append([filename, sorted(p for p in os.listdir(out_dir) if p.startswith("best_"))])
                with open(log_path, "w") as f:
                    json.dump(log, f)
            return save(out_dir, filename, *args, **kwargs)

        runner.save_checkpoint = probe
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            del runner.save_checkpoint
