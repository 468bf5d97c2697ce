"""`squadqa.runs`: the experiment table, from run directories written by hand.

Each run below is a state `train` can leave behind (finished, stopped early, crashed with an
exception, SIGKILLed, half-written files), with hand-chosen numbers checked in the table.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from squadqa.rundir import process_start_ticks, process_status
from squadqa.runs import (
    RunRow,
    collect_runs,
    format_runs,
    humanize_count,
    humanize_duration,
    read_run,
    runs_command,
)

HOST = socket.gethostname()
NOW = datetime.now(UTC).isoformat(timespec="seconds")


def config_toml(name: str, init: str = "scratch", epochs: int = 3) -> str:
    return (
        f'name = "{name}"\n\n[data]\ntrain = "sample"\ndev = "sample"\nmax_train_samples = 0\n\n'
        f"[model]\nhidden_size = 128\nnum_layers = 2\nnum_heads = 4\n\n"
        f'[train]\ninit = "{init}"\nepochs = {epochs}\nbatch_size = 32\nlearning_rate = 0.0005\n'
    )


def epoch(n: int, em: float, f1: float, *, wall: float, tps: float = 1000.0) -> dict[str, Any]:
    return {
        "epoch": n,
        "train_loss": 5.0 / n,
        "dev_loss": 4.0 / n,
        "dev_exact_match": em,
        "dev_f1": f1,
        "lr": 5e-4 / n,
        "wall_time_s": wall,
        "tokens_per_s": tps,
        "train_tokens": 100_000,
    }


def make_run(
    root: Path,
    name: str,
    *,
    status: dict[str, Any] | str | None,
    metrics: list[dict[str, Any]] | str | None = None,
    config: str | None = None,
) -> Path:
    """A run directory as `train` would leave it; strings are written verbatim (broken files)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.toml").write_text(config if config is not None else config_toml(name))
    if status is not None:
        full = status
        if isinstance(status, dict):
            full = {
                "started": NOW,
                "updated": NOW,
                "host": HOST,
                "pid": 1,
                "backend": "torch",
                "init": "scratch",
                **status,
            }
        (d / "status.json").write_text(full if isinstance(full, str) else json.dumps(full))
    if metrics is not None:
        text = metrics
        if not isinstance(metrics, str):
            text = "".join(json.dumps(m) + "\n" for m in metrics)
        (d / "metrics.jsonl").write_text(text)
    return d


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped: what a SIGKILLed run leaves."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_run(
        root,
        "finished-a",
        status={
            "status": "finished",
            "parameters": 4_213_000,
            "train_examples": 1200,
            "train_features": 1300,
            "epochs_planned": 3,
            "epochs_run": 3,
            "best_epoch": 2,
            "best_dev_exact_match": 41.5,
            "best_dev_f1": 52.25,
            "wall_time_s": 754.0,
        },
        metrics=[
            epoch(1, 30.0, 40.0, wall=250.0, tps=1000.0),
            epoch(2, 41.5, 52.25, wall=500.0, tps=1500.0),
            epoch(3, 41.0, 51.0, wall=750.0, tps=1600.0),
        ],
    )
    make_run(
        root,
        "early",
        status={
            "status": "stopped_early",
            "init": "pretrained",
            "parameters": 22_700_000,
            "train_examples": 87_599,
            "epochs_planned": 10,
            "epochs_run": 2,
            "best_epoch": 1,
            "best_dev_exact_match": 60.0,
            "best_dev_f1": 70.5,
            "wall_time_s": 3700.0,
        },
        metrics=[epoch(1, 60.0, 70.5, wall=1800.0), epoch(2, 59.0, 70.0, wall=3650.0)],
        config=config_toml("early", init="pretrained:/models/minilm", epochs=10),
    )
    # Crashed with an exception after one epoch; its status was written before any epoch ended.
    make_run(
        root,
        "crashed",
        status={
            "status": "crashed",
            "parameters": 1_000_000,
            "epochs_planned": 3,
            "epochs_run": 0,
            "best_epoch": None,
            "best_dev_exact_match": None,
            "best_dev_f1": None,
            "wall_time_s": 90.0,
            "error": "Traceback (most recent call last):\n  File x\nRuntimeError: out of memory",
        },
        metrics=[epoch(1, 10.0, 15.0, wall=60.0)],
    )
    # SIGKILLed in epoch 3: status still says running (after epoch 1), metrics has 2 epochs
    # and a half-written third line.
    make_run(
        root,
        "killed",
        status={
            "status": "running",
            "pid": dead_pid(),
            "epochs_planned": 5,
            "epochs_run": 1,
            "best_epoch": 1,
            "best_dev_exact_match": 20.0,
            "best_dev_f1": 25.0,
            "wall_time_s": 100.0,
        },
        metrics="".join(
            json.dumps(m) + "\n"
            for m in (epoch(1, 20.0, 25.0, wall=100.0), epoch(2, 22.0, 30.0, wall=200.0))
        )
        + '{"epoch": 3, "train_lo',
    )
    make_run(root, "broken", status='{"status": "finished", "parame')
    make_run(root, "no-status", status=None)
    make_run(root, "elsewhere", status={"status": "running", "host": "gpu-box-17.example.org"})
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("not a run\n")
    (root / "stray.txt").write_text("not a run either\n")
    return root


@pytest.fixture(scope="module")
def rows(runs_dir: Path) -> dict[str, RunRow]:
    return {r.name: r for r in collect_runs(runs_dir)}


def test_every_run_directory_is_listed_and_nothing_else(rows: dict[str, RunRow]) -> None:
    assert sorted(rows) == [
        "broken", "crashed", "early", "elsewhere", "finished-a", "killed", "no-status",
    ]  # fmt: skip


def test_finished_run_numbers_come_from_the_files(rows: dict[str, RunRow]) -> None:
    r = rows["finished-a"]
    assert r.status == "finished"
    assert (r.init, r.backend, r.parameters, r.train_examples) == (
        "scratch",
        "torch",
        4_213_000,
        1200,
    )
    assert (r.epochs_run, r.epochs_planned, r.best_epoch) == (3, 3, 2)
    assert (r.best_dev_em, r.best_dev_f1) == (41.5, 52.25)
    assert r.wall_time_s == 754.0  # status (final) is later than the last epoch's 750
    assert r.tokens_per_s == 1600.0  # the last epoch's: steady state
    assert r.note == ""


def test_early_stopped_pretrained_run(rows: dict[str, RunRow]) -> None:
    r = rows["early"]
    assert (r.status, r.init, r.epochs_run, r.epochs_planned) == (
        "stopped_early",
        "pretrained",
        2,
        10,
    )
    assert (r.best_epoch, r.best_dev_em, r.best_dev_f1) == (1, 60.0, 70.5)


def test_crash_with_exception_takes_best_epoch_from_metrics(rows: dict[str, RunRow]) -> None:
    r = rows["crashed"]
    assert r.status == "crashed"
    assert (r.epochs_run, r.best_epoch, r.best_dev_em, r.best_dev_f1) == (1, 1, 10.0, 15.0)
    assert r.note.startswith("RuntimeError: out of memory")  # the traceback's exception line
    assert "stale" in r.note


def test_killed_run_shows_as_crashed_with_metrics_newer_than_status(
    rows: dict[str, RunRow],
) -> None:
    r = rows["killed"]
    assert r.status == "crashed"
    assert "is gone" in r.note
    # Stale status said epoch 1 (F1 25); the metrics' two readable epochs say epoch 2.
    assert (r.epochs_run, r.best_epoch, r.best_dev_em, r.best_dev_f1) == (2, 2, 22.0, 30.0)
    assert r.wall_time_s == 200.0
    assert "line 3" in r.note  # the half-written line is noted, not fatal


def test_unreadable_files_show_as_broken_with_the_reason(rows: dict[str, RunRow]) -> None:
    assert rows["broken"].status == "broken"
    assert "status.json: invalid JSON" in rows["broken"].note
    assert rows["broken"].epochs_planned == 3  # what the config still tells
    assert rows["no-status"].status == "broken"
    assert rows["no-status"].note == "status.json missing"


def test_other_hosts_running_run_is_unknown(rows: dict[str, RunRow]) -> None:
    assert rows["elsewhere"].status == "running?"
    assert "gpu-box-17" in rows["elsewhere"].note


HAS_PROC = Path("/proc/self/stat").is_file()


@pytest.mark.skipif(not HAS_PROC, reason="process start ticks come from /proc (Linux)")
def test_live_process_is_running_but_a_reused_pid_is_not(tmp_path: Path) -> None:
    me = process_status({})  # what train and pretrain write for the process they run in
    assert me["pid"] == os.getpid()
    make_run(tmp_path, "alive", status={"status": "running", **me})
    # Same live pid, but recorded for a process that started at another tick: the pid was reused.
    reused = {**me, "process_start_ticks": me["process_start_ticks"] - 1}
    make_run(tmp_path, "reused", status={"status": "running", **reused})
    # A run resumed by this process keeps its first `started`, decades ago.
    resumed = process_status({"started": "2001-01-01T00:00:00+00:00"})
    assert resumed["started"] == "2001-01-01T00:00:00+00:00"
    make_run(tmp_path, "resumed", status={"status": "running", **resumed})
    rows = {r.name: r for r in collect_runs(tmp_path)}
    assert rows["alive"].status == "running"
    assert rows["reused"].status == "crashed"
    assert f"process {os.getpid()} is gone" in rows["reused"].note
    assert rows["resumed"].status == "running"


@pytest.mark.skipif(not HAS_PROC, reason="process start ticks come from /proc (Linux)")
def test_start_ticks_order_processes_by_when_they_began() -> None:
    mine = process_start_ticks(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = process_start_ticks(child.pid)
    finally:
        child.kill()
        child.wait()
    assert isinstance(mine, int) and isinstance(theirs, int)
    assert theirs >= mine  # the child began after this test process did
    assert process_start_ticks(dead_pid()) is None


def test_records_without_start_ticks_fall_back_to_wall_clock(tmp_path: Path) -> None:
    # Status files written before `process_start_ticks` existed: the process must not have
    # begun after the run did. The margins are hours, so clock drift cannot decide the test.
    later = datetime.fromtimestamp(datetime.now(UTC).timestamp() + 3600, UTC).isoformat()
    make_run(tmp_path, "alive", status={"status": "running", "pid": os.getpid(), "started": later})
    make_run(
        tmp_path,
        "reused",
        status={"status": "running", "pid": os.getpid(), "started": "2001-01-01T00:00:00+00:00"},
    )
    make_run(
        tmp_path,
        "resumed",
        status={
            "status": "running",
            "pid": os.getpid(),
            "started": "2001-01-01T00:00:00+00:00",
            "process_started": later,
        },
    )
    rows = {r.name: r for r in collect_runs(tmp_path)}
    assert rows["alive"].status == "running"
    assert rows["reused"].status == (
        "crashed" if HAS_PROC else "running"  # without /proc, existence is all that is known
    )
    assert rows["resumed"].status == "running"


def test_bad_metrics_line_in_a_finished_run_is_broken(tmp_path: Path) -> None:
    good = json.dumps(epoch(1, 30.0, 40.0, wall=10.0))
    d = make_run(
        tmp_path,
        "r",
        status={"status": "finished", "epochs_run": 2, "best_epoch": 2, "best_dev_f1": 41.0},
        metrics=f"{good}\nnot json\n{json.dumps(epoch(2, 31.0, 41.0, wall=20.0))}\n",
    )
    r = read_run(d)
    assert r.status == "broken"
    assert "metrics.jsonl line 2: invalid JSON" in r.note
    assert r.best_dev_f1 == 41.0


def test_a_run_directory_itself_can_be_given(runs_dir: Path) -> None:
    assert [r.name for r in collect_runs(runs_dir / "early")] == ["early"]
    assert collect_runs(runs_dir / "does-not-exist") == []


def test_sorting(rows: dict[str, RunRow]) -> None:
    def order(sort: str) -> list[str]:
        lines = format_runs(list(rows.values()), fmt="csv", sort=sort).splitlines()[1:]
        return [line.split(",")[0] for line in lines]

    # Runs without a score go last, by name.
    no_score = ["broken", "elsewhere", "no-status"]
    assert order("f1") == ["early", "finished-a", "killed", "crashed", *no_score]
    assert order("em") == ["early", "finished-a", "killed", "crashed", *no_score]
    assert order("name") == sorted(rows)
    assert order("time")[:4] == ["crashed", "killed", "finished-a", "early"]  # 90 s, 200 s, ...
    with pytest.raises(ValueError, match="unknown sort"):
        format_runs(list(rows.values()), sort="nope")


def test_csv_has_raw_numbers(rows: dict[str, RunRow]) -> None:
    text = format_runs(list(rows.values()), fmt="csv", sort="name")
    by_name = {r["name"]: r for r in csv.DictReader(io.StringIO(text))}
    a = by_name["finished-a"]
    assert a["parameters"] == "4213000"
    assert a["wall_time_s"] == "754.0"
    assert (a["best_dev_em"], a["best_dev_f1"], a["best_epoch"]) == ("41.5", "52.25", "2")
    assert a["tokens_per_s"] == "1600.0"
    assert by_name["broken"]["best_dev_f1"] == ""
    assert by_name["crashed"]["note"].startswith("RuntimeError: out of memory")


def test_markdown_is_humanised(rows: dict[str, RunRow]) -> None:
    text = format_runs(list(rows.values()), fmt="md", sort="f1")
    lines = text.splitlines()
    assert lines[0].startswith("| run | status |")
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines[2:])
    a = next(line for line in lines if line.startswith("| finished-a "))
    cells = [c.strip() for c in a.strip("|").split("|")]
    assert cells[:12] == [
        "finished-a", "finished", "scratch", "torch", "4.2M", "1.2k", "3/3", "2",
        "41.50", "52.25", "12m 34s", "1.6k",
    ]  # fmt: skip
    early = next(line for line in lines if line.startswith("| early "))
    assert "| 22.7M |" in early and "| 1h 01m |" in early and "| 2/10 |" in early


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "-"), (999, "999"), (1200, "1.2k"), (850_000, "850k"), (4_213_000, "4.2M"),
     (110_000_000, "110M"), (1_500_000_000, "1.5B")],
)  # fmt: skip
def test_humanize_count(n: int | None, text: str) -> None:
    assert humanize_count(n) == text


@pytest.mark.parametrize(
    ("s", "text"),
    [(None, "-"), (4.25, "4.2s"), (42.3, "42s"), (754, "12m 34s"), (11_100, "3h 05m"),
     (190_000, "2d 04h")],
)  # fmt: skip
def test_humanize_duration(s: float | None, text: str) -> None:
    assert humanize_duration(s) == text


def test_runs_command(runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runs_command(str(runs_dir), "f1", "csv") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("early,stopped_early,pretrained,")
    assert runs_command(str(runs_dir), "bogus", "md") == 2
    assert "unknown --sort" in capsys.readouterr().err
    assert runs_command(str(tmp_path / "missing"), "f1", "md") == 2
    assert runs_command(str(tmp_path), "f1", "md") == 0
    assert "no runs" in capsys.readouterr().err
