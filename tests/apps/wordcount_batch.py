"""Word count over a bounded batch, as SAGE's examples wrote it: lambdas all the way, and a
driver-side counter updated from a map (thread mode: functions share the driver's memory)."""

from collections import Counter

from sage.core.api.local_environment import LocalEnvironment
from sage.core.function.batch_function import BatchFunction


class TextDataBatch(BatchFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sentences = [
            "hello world sage framework",
            "this is a streaming data processing example",
            "lambda functions make the code much cleaner",
            "word count is a classic big data example",
            "sage provides powerful stream processing capabilities",
        ]
        self.counter = 0

    def execute(self):
        if self.counter >= len(self.sentences):
            return None  # the batch is done
        sentence = self.sentences[self.counter]
        self.counter += 1
        return sentence


def main():
    env = LocalEnvironment("batch_wordcount")
    word_counts = Counter()
    total = 0

    def update_word_count(word_with_count):
        nonlocal total
        word, count = word_with_count
        word_counts[word] += count
        total += count
        return word_with_count

    (env.from_batch(TextDataBatch)
        .map(lambda sentence: sentence.lower())
        .map(lambda sentence: sentence.strip())
        .filter(lambda sentence: len(sentence) > 0)
        .flatmap(lambda sentence: sentence.split())
        .filter(lambda word: len(word) > 2)
        .map(lambda word: word.replace(",", "").replace(".", ""))
        .map(lambda word: (word, 1))
        .map(update_word_count)
        .sink(lambda x: None))
    try:
        env.submit(autostop=True)
        for word, count in sorted(word_counts.items()):
            print(f"{word:20}: {count:3d}")
        print(f"Total words processed: {total}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
