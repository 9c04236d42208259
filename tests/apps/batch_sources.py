"""Batch sources that stop by themselves: a BatchFunction, a collection, a SourceFunction
that returns a StopSignal; autostop returns once everything reached the sinks."""

import sys

from sage.core.api.local_environment import LocalEnvironment
from sage.core.function.batch_function import BatchFunction
from sage.core.function.source_function import SourceFunction, StopSignal


class Countdown(BatchFunction):
    def __init__(self, start, **kwargs):
        super().__init__(**kwargs)
        self.n = start

    def execute(self):
        self.n -= 1
        return None if self.n < 0 else self.n


class Squares(SourceFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.i = 0

    def execute(self):
        self.i += 1
        return StopSignal("squares") if self.i > 5 else self.i * self.i


def main(mode: str) -> None:
    env = LocalEnvironment("batch_sources", mode=mode)
    env.from_batch(Countdown, 4).map(lambda n: f"countdown {n}").print()
    env.from_batch_collection(["a", "b"]).map(lambda s: f"letter {s}").print()
    env.from_source(Squares).map(lambda s: f"square {s}").print()
    summary = env.submit(autostop=True)
    print(f"done {sum(op['items_in'] for name, op in summary.operators.items() if name.startswith('print'))}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "thread")
