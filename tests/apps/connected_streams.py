"""Connected streams, as SAGE's example: one numbered source split into four filtered
branches, connected again, mapped and printed, then a named sink class."""

import sys

from sage.core.api.local_environment import LocalEnvironment
from sage.core.function.sink_function import SinkFunction
from sage.core.function.source_function import SourceFunction, StopSignal


class NumberSource(SourceFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.counter = 0

    def execute(self):
        self.counter += 1
        if self.counter > 12:
            return StopSignal("numbers")
        return self.counter


class StatsSink(SinkFunction):
    def __init__(self, **kwargs):
        self.name = kwargs.get("name", "StatsSink")

    def execute(self, data):
        print(f"[{self.name}] Received: {data}", flush=True)


def main(mode: str) -> None:
    env = LocalEnvironment("simple_connected_example", mode=mode)
    main_stream = env.from_source(NumberSource, delay=0.001)
    even = main_stream.filter(lambda x: x % 2 == 0).map(lambda x: ("EVEN", x))
    odd = main_stream.filter(lambda x: x % 2 == 1).map(lambda x: ("ODD", x))
    multiple = main_stream.filter(lambda x: x % 3 == 0).map(lambda x: ("MULTIPLE_3", x))
    large = main_stream.filter(lambda x: x > 5).map(lambda x: ("LARGE", x))
    (even.connect(odd).connect(multiple).connect(large)
        .map(lambda data: f"Processed: {data[0]} -> {data[1]}")
        .print("Final Result")
        .sink(StatsSink, name="FinalSink"))
    env.submit(autostop=True)
    env.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "thread")
