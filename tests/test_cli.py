"""The ``dropkit`` command line: the methods table and its JSON form."""

import json

from dropkit.cli import main as cli_main


def test_cli_methods_table_and_json(capsys):
    assert cli_main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "dropblock" in out and "theta" in out
    assert cli_main(["methods", "--json", "drop*"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in cards} >= {"dropout", "dropblock", "dropconnect", "drop_path"}
