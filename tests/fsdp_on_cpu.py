"""`torchrun --nproc_per_node 2 tests/fsdp_on_cpu.py [--die-after-checkpoint N] TRAINER FLAGS`: gen's trainer
under accelerate's FSDP 2 on CPU processes, for tests.

accelerate 1.16 turns FSDP on only for accelerator devices: on CPU (`Accelerator(cpu=True)` under torchrun)
its state is MULTI_CPU and the FSDP plugin is ignored (accelerate/state.py), and `accelerate launch` with an
FSDP config on a machine without a GPU starts processes that each see a single-process run. This launcher
sets the state to FSDP (version 2, transformer-based wrap on the model's `_no_split_modules`, sharded state
dict: examples/accelerate/fsdp.yaml's settings) once accelerate has formed its gloo process group; from there
on everything is accelerate's and torch's own code: `fully_shard`, gathered state dicts, sharded
torch.distributed.checkpoint checkpoints. `--die-after-checkpoint N` stops the run with KeyboardInterrupt
right after checkpoint N is written, as a kill would."""

import sys

import accelerate.state as state
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_init = state.AcceleratorState.__init__


def _fsdp_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU:
        self.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap", state_dict_type="SHARDED_STATE_DICT", reshard_after_forward=True
        )
        self.distributed_type = DistributedType.FSDP


def main(argv: list[str]) -> int:
    state.AcceleratorState.__init__ = _fsdp_init
    if "--die-after-checkpoint" in argv:
        at = argv.index("--die-after-checkpoint")
        step = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2 :]
        from gen.training import checkpoints

        save = checkpoints.save

        def save_then_die(accelerator, folder, at_step, *args, **kwargs):
            out = save(accelerator, folder, at_step, *args, **kwargs)
            if at_step == step:
                raise KeyboardInterrupt(f"killed after the step-{step} checkpoint")
            return out

        checkpoints.save = save_then_die
    from gen.training.train import main as train

    return train(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
