"""CoMap with lambdas, as SAGE's example: list sources that return None once their list is
done (the job runs until stop()), three styles of comap functions."""

import sys
import time

from sage.core.api.local_environment import LocalEnvironment
from sage.core.function.source_function import SourceFunction


class ListSource(SourceFunction):
    def __init__(self, data_list, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_list = data_list
        self.index = 0

    def execute(self):
        if self.index < len(self.data_list):
            result = self.data_list[self.index]
            self.index += 1
            return result
        return None  # nothing more: the job goes on until stop()


def format_temperature(celsius):
    return f"temp {celsius}C / {celsius * 9 / 5 + 32:.1f}F"


def main(mode: str) -> None:
    env = LocalEnvironment(mode=mode)
    temp = env.from_source(ListSource, [20.5, 22.1, 19.8, 25.3, 21.7])
    humidity = env.from_source(ListSource, [45, 52, 38, 67, 41])
    pressure = env.from_source(ListSource, [1013.2, 1015.8, 1012.1])
    (temp.connect(humidity).connect(pressure)
        .comap([
            lambda t: f"sensor temperature {t} {'Hot' if t > 23 else 'Normal'}",
            lambda h: f"sensor humidity {h} {'High' if h > 60 else 'Normal'}",
            lambda p: f"sensor pressure {p} {'High' if p > 1015 else 'Normal'}",
        ])
        .print("Sensor Data"))
    (env.from_source(ListSource, [18.5, 26.2])
        .connect(env.from_source(ListSource, [35, 75]))
        .comap(format_temperature, lambda h: f"humidity {h}%")
        .print("Weather Data"))
    env.submit()
    env.run_streaming()
    time.sleep(0.5)
    env.stop()
    env.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "thread")
