"""Fault injection for the tests, kept out of the library: a training callback that makes one process exit at once
(as a crash would), stop responding, or get a Ctrl-C (a real SIGINT, sent to itself), and a runner that installs it
into `flower_tl train`.

    python -m tests.fault_hooks RANK:EPOCH:ITERATION[:exit|hang|sigint] train --data ... --out ...

runs `flower_tl.cli.main` on the arguments after the fault, with a `Fault` callback in the learner that
`flower_tl train` builds. Under `torchrun` (`torchrun_command(args, module='tests.fault_hooks')`) every process
runs it; only the process of that rank fails, at that training iteration (both counted from 1)."""
import os, signal, sys, time
from dataclasses import dataclass
from functools import partial

from flower_tl.loop import Callback


@dataclass
class Fault(Callback):
    "Process `rank` exits at once (`exit`, like a crash), stops responding (`hang`) or gets a SIGINT (`sigint`, like Ctrl-C) before training step `iteration` of `epoch`."
    rank: int
    epoch: int
    iteration: int
    action: str = 'exit'

    @classmethod
    def parse(cls, spec: str) -> 'Fault':
        "`RANK:EPOCH:ITERATION` or `RANK:EPOCH:ITERATION:exit|hang|sigint`."
        parts = spec.split(':')
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in ('exit', 'hang', 'sigint')):
            raise ValueError(f"a fault is RANK:EPOCH:ITERATION[:exit|hang|sigint]; got {spec!r}")
        return cls(*map(int, parts[:3]), *parts[3:])

    def before_batch(self):
        l = self.learn
        if not l.training or (l.dist.rank, l.epoch + 1, l.iter) != (self.rank, self.epoch, self.iteration): return
        if self.action == 'sigint':   # as if Ctrl-C were pressed now: no race with a signal sent from outside
            print(f"test fault: SIGINT at epoch {self.epoch}, iteration {self.iteration}", flush=True)
            return os.kill(os.getpid(), signal.SIGINT)
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
