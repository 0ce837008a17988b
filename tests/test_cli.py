"""The `lopt` command line: dispatch, clear errors for bad input, and the data listing."""

import json

import pytest

from lopt.cli import main


def test_unknown_command_lists_commands():
    with pytest.raises(SystemExit) as e:
        main(["nope"])
    message = str(e.value.code)
    assert "unknown command 'nope'" in message
    for cmd in ("lopt data fetch", "lopt data list", "lopt tasks list", "lopt demo"):
        assert cmd in message


def test_unknown_subcommand_names_valid_ones():
    with pytest.raises(SystemExit) as e:
        main(["data", "download"])
    assert "expected one of ['fetch', 'list'], got 'download'" in str(e.value.code)


def test_fetch_unknown_dataset_lists_valid_names():
    with pytest.raises(SystemExit) as e:
        main(["data", "fetch", "cifar10"])
    message = str(e.value.code)
    assert "unknown dataset 'cifar10'" in message
    for name in ("mnist", "fashion_mnist", "kjv", "digits"):
        assert name in message


def test_data_list_shows_every_dataset(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LOPT_DATA", str(tmp_path))  # empty cache: nothing fetched but procedural sets
    main(["data", "list"])
    out = capsys.readouterr().out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "no" in lines["mnist"] and "11.50 MB" in lines["mnist"]
    assert "yes" in lines["moons"] and "procedural" in lines["moons"]


@pytest.mark.slow
def test_demo_writes_config_and_results(tmp_path):
    from lopt.demo import run_demo

    rows = run_demo(out=str(tmp_path), steps=100, seeds=1)
    saved = json.loads((tmp_path / "results.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["steps"] == 100 and config["seeds"] == 1
    assert [r["task"] for r in saved] == [r["task"] for r in rows]
    for r in saved:  # the rate is selected on the validation split; the test loss is reported at it
        best = min(range(len(r["valid_loss_per_lr"])), key=r["valid_loss_per_lr"].__getitem__)
        assert r["best_lr"] == config["learning_rates"][best]
        assert r["test_loss"] == r["test_loss_per_lr"][best]
