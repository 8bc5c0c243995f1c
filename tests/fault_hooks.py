"""Fault injection for the distributed tests, kept out of the library: a training callback that makes one process
exit at once (as a crash would) or stop responding, and a runner that installs it into `flower_tl train`.

    python -m tests.fault_hooks RANK:EPOCH:ITERATION[:exit|hang] train --data ... --out ...

runs `flower_tl.cli.main` on the arguments after the fault, with a `Fault` callback in the learner that
`flower_tl train` builds. Under `torchrun` (`torchrun_command(args, module='tests.fault_hooks')`) every process
runs it; only the process of that rank fails, at that training iteration (both counted from 1)."""
import os, sys, time
from dataclasses import dataclass
from functools import partial

from flower_tl.callbacks import Callback


@dataclass
class Fault(Callback):
    "Process `rank` exits at once (`exit`, like a crash) or stops responding (`hang`) before training step `iteration` of `epoch`."
    rank: int
    epoch: int
    iteration: int
    action: str = 'exit'

    @classmethod
    def parse(cls, spec: str) -> 'Fault':
        "`RANK:EPOCH:ITERATION` or `RANK:EPOCH:ITERATION:exit|hang`."
        parts = spec.split(':')
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in ('exit', 'hang')):
            raise ValueError(f"a fault is RANK:EPOCH:ITERATION[:exit|hang]; got {spec!r}")
        return cls(*map(int, parts[:3]), *parts[3:])

    def before_step(self, learn, phase, iteration):
        if phase != 'train' or (learn.dist.rank, learn.epoch + 1, iteration) != (self.rank, self.epoch, self.iteration):
            return
        print(f"test fault: rank {self.rank} {'exits' if self.action == 'exit' else 'hangs'} at epoch {self.epoch}, "
              f"iteration {self.iteration}", file=sys.stderr, flush=True)
        if self.action == 'exit': os._exit(1)
        while True: time.sleep(3600)


def main(argv=None) -> int:
    "Run `flower_tl` with the arguments after the first, with a `Fault` from the first in the training learner."
    from flower_tl import cli
    argv = sys.argv[1:] if argv is None else argv
    fault = Fault.parse(argv[0])
    cli.train_job = partial(cli.train_job, cbs=[fault])   # the job `flower_tl train` calls, with the callback
    return cli.main(argv[1:])


if __name__ == '__main__': sys.exit(main())
