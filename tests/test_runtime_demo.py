"""The demo pipeline: word count in both modes, checked against a one-process count."""

import pytest

from sage.runtime import demo

pytest_plugins = ["runtime_support"]  # fixtures: mode, collect, no_leftovers
pytestmark = [pytest.mark.usefixtures("no_leftovers"), pytest.mark.timeout(120)]


def test_demo_counts_match_a_one_process_count(mode, capsys):
    assert demo.main(["--mode", mode, "--lines", "3000", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{mode} mode" in out
    assert "check: the counts match a one-process count (27,000 words" in out
    for stage in demo.STAGES:
        assert f"\n{stage:10} " in out
    assert "top 3 words:" in out


def test_demo_reports_a_wrong_count(mode, capsys, monkeypatch):
    def lose_one_word(self):
        return list(self.counts.items())[1:]

    monkeypatch.setattr(demo.CountWords, "finish", lose_one_word)
    assert demo.main(["--mode", mode, "--lines", "500"]) == 1
    assert "check: FAILED" in capsys.readouterr().out


def test_corpus_lines_are_the_same_every_time():
    assert [demo.corpus_line(i) for i in range(3)] == [demo.corpus_line(i) for i in range(3)]
    assert all(len(demo.corpus_line(i).split()) == demo.WORDS_PER_LINE for i in range(100))


def test_the_live_display_draws_every_stage():
    import io

    totals = {stage: [10 * n, 20 * n, 2] for n, stage in enumerate(demo.STAGES, 1)}
    plain = io.StringIO()
    progress = demo.Progress(plain)
    progress.show(totals, 1.5)
    assert all(f"{stage} {10 * n:,} in" in plain.getvalue()
               for n, stage in enumerate(demo.STAGES, 1))
    pytest.importorskip("rich")
    shown = io.StringIO()
    live = demo.RichProgress(shown)
    live.show(totals, 1.5)
    live.close()
    assert all(stage in shown.getvalue() for stage in demo.STAGES)
