"""The `lopt` command line: dispatch, clear errors for bad input, and the data listing."""

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
