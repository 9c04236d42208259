"""Word count with keyby: each word's running count lives in one counter instance, so it
works in process mode too (argv[1]: thread or process)."""

import sys

from sage.core.api.local_environment import LocalEnvironment
from sage.core.function.flatmap_function import FlatMapFunction
from sage.core.function.map_function import MapFunction
from sage.core.function.sink_function import SinkFunction

TEXT = [
    "to be or not to be",
    "that is the question",
    "whether tis nobler in the mind to suffer",
    "the slings and arrows of outrageous fortune",
] * 25


class SplitWords(FlatMapFunction):
    def execute(self, data):
        for word in data.split():
            self.collect(word)


class CountWords(MapFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.counts = {}

    def execute(self, word):
        self.counts[word] = self.counts.get(word, 0) + 1
        return (word, self.counts[word], self.ctx.parallel_index)


class PrintCount(SinkFunction):
    def execute(self, data):
        word, count, instance = data
        print(f"count {word} {count} {instance}", flush=True)


def main(mode: str) -> None:
    env = LocalEnvironment("keyby_wordcount", mode=mode)
    (env.from_batch(TEXT)
        .flatmap(SplitWords, parallelism=2)
        .keyby(lambda word: word)
        .map(CountWords, parallelism=2)
        .sink(PrintCount))
    summary = env.submit(autostop=True)
    print(f"summary {summary.operators['CountWords']['items_in']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "thread")
