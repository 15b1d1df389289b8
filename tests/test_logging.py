"""Tests for tdrl.logging: progress.csv, params.json, debug.log, snapshots, contexts."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tdrl.logging.logger as logger_module
from tdrl.logging import (
    SNAPSHOT_MODES,
    Logger,
    NullLogger,
    ProgressBar,
    find_snapshot,
    get_logger,
    load_snapshot,
    logger_context,
)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_progress_csv_two_dumps(tmp_path: Path) -> None:
    with logger_context(tmp_path, run_ID=1, echo=False) as logger:
        logger.record_tabular("Diagnostics/Iteration", 0)
        logger.record_tabular("loss", np.float32(0.5))
        logger.dump_tabular()
        logger.record_tabular("Diagnostics/Iteration", torch.tensor(1))
        logger.record_tabular("loss", torch.tensor(0.25))
        logger.dump_tabular()
    header, rows = read_csv(tmp_path / "run_1" / "progress.csv")
    assert header == ["Diagnostics/Iteration", "loss"]
    assert rows == [
        {"Diagnostics/Iteration": "0", "loss": "0.5"},
        {"Diagnostics/Iteration": "1", "loss": "0.25"},
    ]


def test_record_tabular_types(tmp_path: Path) -> None:
    with logger_context(tmp_path, echo=False) as logger:
        logger.record_tabular("int", np.int64(3))
        logger.record_tabular("bool", True)
        logger.record_tabular("float", 1.5)
        logger.record_tabular("missing_later", 7)
        logger.dump_tabular()
        logger.record_tabular("int", 4)
        logger.dump_tabular()
        with pytest.raises(ValueError, match="single number"):
            logger.record_tabular("vec", torch.zeros(3))
        with pytest.raises(TypeError, match="needs a number"):
            logger.record_tabular("text", "abc")
    _, rows = read_csv(tmp_path / "run_0" / "progress.csv")
    assert rows[0] == {"int": "3", "bool": "1", "float": "1.5", "missing_later": "7"}
    # A key missing from a later row reads as missing (NaN), not as zero.
    assert rows[1] == {"int": "4", "bool": "nan", "float": "nan", "missing_later": "nan"}
    assert math.isnan(float(rows[1]["float"]))


def test_header_grows_and_pads_old_rows(tmp_path: Path) -> None:
    with logger_context(tmp_path, echo=False) as logger:
        for itr in range(4):
            logger.record_tabular("a", itr)
            if itr >= 2:
                logger.record_tabular("b", 10 * itr)
            logger.dump_tabular()
    path = tmp_path / "run_0" / "progress.csv"
    lines = path.read_text().splitlines()
    # Rows written before column b appeared read as missing (NaN), as rlpyt padded them.
    assert lines == ["a,b", "0,nan", "1,nan", "2,20", "3,30"]
    header, rows = read_csv(path)
    assert header == ["a", "b"]
    assert [r["b"] for r in rows] == ["nan", "nan", "20", "30"]
    b = [float(r["b"]) for r in rows]
    assert math.isnan(b[0]) and math.isnan(b[1]) and b[2:] == [20.0, 30.0]


def test_misc_stat_matches_numpy(tmp_path: Path) -> None:
    values = np.array([3.0, -1.0, 4.0, 1.5, 9.0, 2.0])
    with logger_context(tmp_path, echo=False) as logger:
        logger.record_tabular_misc_stat("Return", values)
        logger.record_tabular_misc_stat("loss", torch.tensor(values))
        logger.record_tabular_misc_stat("list", list(values))
        logger.dump_tabular()
    header, rows = read_csv(tmp_path / "run_0" / "progress.csv")
    suffixes = ["Average", "Std", "Median", "Min", "Max"]
    assert header == [f"{k}{s}" for k in ("Return", "loss", "list") for s in suffixes]
    expected = [values.mean(), values.std(), np.median(values), values.min(), values.max()]
    for key in ("Return", "loss", "list"):
        got = [float(rows[0][f"{key}{s}"]) for s in suffixes]
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_misc_stat_empty_is_nan(tmp_path: Path) -> None:
    with logger_context(tmp_path, echo=False) as logger:
        logger.record_tabular_misc_stat("Return", [])
        logger.record_tabular_misc_stat("loss", torch.zeros(0))
        logger.dump_tabular()
    header, rows = read_csv(tmp_path / "run_0" / "progress.csv")
    assert len(header) == 10
    assert all(math.isnan(float(rows[0][k])) for k in header)


@dataclasses.dataclass
class _Inner:
    lr: float = 3e-4
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))


@dataclasses.dataclass
class _Config:
    seed: int = 1
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    nested: dict = dataclasses.field(default_factory=lambda: {"gamma": 0.99, "dims": (64, 64)})


def test_params_json(tmp_path: Path) -> None:
    with logger_context(tmp_path, run_ID=3, name="ppo", config=_Config(), echo=False):
        pass
    path = tmp_path / "run_3" / "params.json"
    params = json.loads(path.read_text())
    assert params == {
        "seed": 1,
        "inner": {"lr": 3e-4, "device": repr(torch.device("cpu"))},
        "nested": {"gamma": 0.99, "dims": [64, 64]},
        "name": "ppo",
        "run_ID": 3,
    }
    assert path.read_text() == json.dumps(params, indent=2, sort_keys=True) + "\n"

    with logger_context(tmp_path, run_ID=4, config={"fn": len, "x": None}, echo=False):
        pass
    params = json.loads((tmp_path / "run_4" / "params.json").read_text())
    assert params == {"fn": repr(len), "x": None, "name": "experiment", "run_ID": 4}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("none", set()),
        ("last", {"params.pkl"}),
        ("all", {f"itr_{i}.pkl" for i in range(5)}),
        ("gap", {"itr_0.pkl", "itr_2.pkl", "itr_4.pkl"}),
        ("last+gap", {"params.pkl", "itr_0.pkl", "itr_2.pkl", "itr_4.pkl"}),
    ],
)
def test_snapshot_modes(tmp_path: Path, mode: str, expected: set[str]) -> None:
    assert mode in SNAPSHOT_MODES
    with logger_context(tmp_path, snapshot_mode=mode, snapshot_gap=2, echo=False) as logger:
        returned = [logger.save_itr_params(itr, {"itr": itr}) for itr in range(5)]
    run_dir = tmp_path / "run_0"
    files = {p.name for p in run_dir.glob("*.pkl")}
    assert files == expected
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    if mode == "none":
        assert returned == [None] * 5
    if mode == "gap":
        assert returned == [
            run_dir / "itr_0.pkl",
            None,
            run_dir / "itr_2.pkl",
            None,
            run_dir / "itr_4.pkl",
        ]
    if "last" in mode:
        assert torch.load(run_dir / "params.pkl", weights_only=False) == {"itr": 4}
    for name in expected - {"params.pkl"}:
        itr = int(name[4:-4])
        assert torch.load(run_dir / name, weights_only=False) == {"itr": itr}


def test_atomic_save_keeps_old_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with logger_context(tmp_path, echo=False) as logger:
        path = logger.save_itr_params(0, {"w": torch.ones(3)})
        assert path == logger.run_dir / "params.pkl"

        def failing_replace(src: str, dst: str) -> None:
            raise OSError("disk gone")

        monkeypatch.setattr(logger_module.os, "replace", failing_replace)
        with pytest.raises(OSError, match="disk gone"):
            logger.save_itr_params(1, {"w": torch.zeros(3)})
        monkeypatch.undo()
        with pytest.raises(Exception):  # noqa: B017 (pickling a lambda fails, type varies)
            logger.save_itr_params(2, {"fn": lambda: 0})
        assert sorted(p.name for p in logger.run_dir.iterdir()) == [
            "debug.log",
            "params.json",
            "params.pkl",
        ]
    assert torch.equal(load_snapshot(tmp_path / "run_0")["w"], torch.ones(3))


def test_find_and_load_snapshot(tmp_path: Path) -> None:
    with logger_context(tmp_path, snapshot_mode="all", echo=False) as logger:
        for itr in (2, 10, 9):
            logger.save_itr_params(itr, {"itr": itr})
    run_dir = tmp_path / "run_0"
    assert find_snapshot(run_dir) == run_dir / "itr_10.pkl"
    assert find_snapshot(str(run_dir / "itr_2.pkl")) == run_dir / "itr_2.pkl"
    assert load_snapshot(run_dir) == {"itr": 10}
    assert load_snapshot(run_dir / "itr_9.pkl") == {"itr": 9}

    torch.save({"itr": "last"}, run_dir / "params.pkl")
    assert find_snapshot(run_dir) == run_dir / "params.pkl"
    assert load_snapshot(run_dir, map_location="cpu") == {"itr": "last"}

    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_dir"):
        find_snapshot(tmp_path / "empty_dir")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_snapshot(tmp_path / "nowhere")


def test_resume(tmp_path: Path) -> None:
    with logger_context(tmp_path, config={"a": 1}, echo=False) as logger:
        logger.record_tabular("x", 1)
        logger.dump_tabular()
        logger.log("first run")
    match = r"run_0.*another run ID, or resume=True \(tdrl train: --resume\)"
    with pytest.raises(FileExistsError, match=match), logger_context(tmp_path, echo=False):
        pass
    with logger_context(tmp_path, config={"a": 2}, resume=True, echo=False) as logger:
        logger.record_tabular("x", 2)
        logger.dump_tabular()
        logger.record_tabular("x", 3)
        logger.record_tabular("y", 30)
        logger.dump_tabular()
        logger.log("second run")
    run_dir = tmp_path / "run_0"
    assert (run_dir / "progress.csv").read_text().splitlines() == ["x,y", "1,nan", "2,nan", "3,30"]
    assert json.loads((run_dir / "params.json").read_text())["a"] == 1
    debug = (run_dir / "debug.log").read_text()
    assert "first run" in debug and "second run" in debug


def test_exception_propagates_and_keeps_files(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), logger_context(tmp_path, echo=False) as logger:
        logger.record_tabular("x", 1)
        logger.dump_tabular()
        logger.save_itr_params(0, {"x": 1})
        logger.record_tabular("x", 2)  # never dumped
        raise RuntimeError("boom")
    run_dir = tmp_path / "run_0"
    debug = (run_dir / "debug.log").read_text()
    assert "run failed:" in debug
    assert "RuntimeError: boom" in debug
    assert (run_dir / "progress.csv").read_text().splitlines() == ["x", "1"]
    assert load_snapshot(run_dir) == {"x": 1}
    assert isinstance(get_logger(), NullLogger)


def test_get_logger_nesting(tmp_path: Path) -> None:
    assert isinstance(get_logger(), NullLogger)
    with logger_context(tmp_path, run_ID="outer", echo=False) as outer:
        assert get_logger() is outer
        assert outer.run_dir == tmp_path / "run_outer"
        with logger_context(tmp_path, run_ID="inner", echo=False) as inner:
            assert get_logger() is inner
        assert get_logger() is outer
    assert isinstance(get_logger(), NullLogger)


def test_null_logger(capsys: pytest.CaptureFixture[str]) -> None:
    null = get_logger()
    assert isinstance(null, NullLogger)
    assert null.run_dir is None
    null.record_tabular("x", 1)
    null.record_tabular_misc_stat("y", [1.0])
    null.dump_tabular()
    assert null.save_itr_params(0, {"x": 1}) is None
    null.log("hello null")
    null.log("quiet", echo=False)
    null.close()
    out = capsys.readouterr().out
    assert "hello null" in out and "quiet" not in out


def test_log_and_echo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with logger_context(tmp_path, echo=True) as logger:
        logger.log("shown")
        logger.log("hidden", echo=False)
        logger.record_tabular("ReturnAverage", 1.25)
        logger.dump_tabular()
        logger.record_tabular("ReturnAverage", 2.5)
        logger.dump_tabular(echo=False)
    out = capsys.readouterr().out
    assert "shown" in out and "hidden" not in out
    assert "ReturnAverage  1.25" in out and "2.5" not in out
    debug = (tmp_path / "run_0" / "debug.log").read_text().splitlines()
    assert any(line.endswith(" | shown") for line in debug)
    assert any(line.endswith(" | hidden") for line in debug)
    assert debug[0][:4].isdigit()  # timestamp prefix


def test_closed_logger_raises(tmp_path: Path) -> None:
    logger = Logger(tmp_path / "direct", echo=False)
    logger.close()
    logger.close()
    with pytest.raises(RuntimeError, match="closed"):
        logger.log("late")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"snapshot_mode": "best"}, r"snapshot_mode.*last\+gap"),
        ({"snapshot_gap": 0}, "snapshot_gap must be a positive int"),
        ({"snapshot_gap": 1.5}, "snapshot_gap must be a positive int"),
        ({"snapshot_gap": True}, "snapshot_gap must be a positive int"),
    ],
)
def test_bad_snapshot_args(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match), logger_context(tmp_path, **kwargs):
        pass
    assert not (tmp_path / "run_0").exists()


def test_tensorboard_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    match = r'pip install "tdrl\[tb\]"'
    with pytest.raises(ImportError, match=match), logger_context(tmp_path, use_tensorboard=True):
        pass


def test_tensorboard_writes_events(tmp_path: Path) -> None:
    pytest.importorskip("torch.utils.tensorboard")
    with logger_context(tmp_path, use_tensorboard=True, echo=False) as logger:
        logger.record_tabular("Diagnostics/Iteration", 7)
        logger.record_tabular("loss", 0.5)
        logger.dump_tabular()
    events = [p for p in os.listdir(tmp_path / "run_0") if p.startswith("events.out.tfevents")]
    assert events


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(10, desc="train", disable=False, unit="env-step") as bar:
        bar.update(4, loss=0.3456, fps=np.float32(120.04), itr=2)
        bar.update(6)
        assert bar.n == 10
    err = capsys.readouterr().err
    assert "train" in err and "10/10" in err
    assert "loss=0.3" in err and "fps=120.0" in err and "itr=2" in err
    with ProgressBar(5, disable=True) as hidden:
        hidden.update(5)
    assert capsys.readouterr().err == ""


def test_repair_progress_drops_later_rows_and_restores_a_lost_one(tmp_path: Path) -> None:
    with logger_context(tmp_path, echo=False) as logger:
        for itr in range(4):
            logger.record_tabular("Diagnostics/Iteration", itr)
            logger.dump_tabular()
        assert logger.num_rows == 4
        assert "dropped 2 row(s)" in logger.repair_progress(2)
        assert logger.num_rows == 2
        done = logger.repair_progress(3, {"Diagnostics/Iteration": 2, "x": 0.5})
        assert "restored" in done and logger.num_rows == 3
        assert logger.repair_progress(3, {"Diagnostics/Iteration": 2}) == ""
        assert "missing" in logger.repair_progress(5)
        logger.record_tabular("Diagnostics/Iteration", 3)
        assert logger.pending_row() == {"Diagnostics/Iteration": 3}
        logger.dump_tabular()
    lines = (tmp_path / "run_0" / "progress.csv").read_text().splitlines()
    assert lines == ["Diagnostics/Iteration,x", "0,nan", "1,nan", "2,0.5", "3,nan"]


def test_snapshot_files_follow_the_mode(tmp_path: Path) -> None:
    with logger_context(tmp_path, snapshot_mode="last+gap", snapshot_gap=2, echo=False) as lg:
        assert lg.snapshot_files(3) == [lg.run_dir / "params.pkl"]
        assert lg.snapshot_files(4) == [lg.run_dir / "params.pkl", lg.run_dir / "itr_4.pkl"]
    null = NullLogger()
    assert null.snapshot_files(0) == [] and null.num_rows == 0 and null.pending_row() == {}
    assert null.repair_progress(3, {"x": 1}) == ""
