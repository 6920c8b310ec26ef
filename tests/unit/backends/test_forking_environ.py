"""A forked child's environment: the deployment's, then the bot's import, then its own."""

from cattery.backends.forking.child import instance_environ

LAUNCHED = {"PATH": "/bin", "SECRET": "from-secret-set", "GONE": "x"}


def test_what_the_import_did_stays_and_the_instance_values_win() -> None:
    imported = {**LAUNCHED, "SECRET": "from-dotenv", "DOTENV_ONLY": "1"}
    given = {**LAUNCHED, "CATTERY_INSTANCE_TOKEN": "t1"}
    env = instance_environ(LAUNCHED, imported, given)
    assert env["SECRET"] == "from-dotenv"  # load_dotenv(override=True) at import
    assert env["DOTENV_ONLY"] == "1"
    assert env["CATTERY_INSTANCE_TOKEN"] == "t1"


def test_an_instance_value_that_differs_from_the_launch_wins_over_the_import() -> None:
    imported = {**LAUNCHED, "SECRET": "from-dotenv"}
    given = {**LAUNCHED, "SECRET": "per-instance"}
    assert instance_environ(LAUNCHED, imported, given)["SECRET"] == "per-instance"


def test_removals_by_the_import_and_by_the_instance_both_hold() -> None:
    imported = {k: v for k, v in LAUNCHED.items() if k != "PATH"}
    given = {k: v for k, v in LAUNCHED.items() if k != "GONE"}
    env = instance_environ(LAUNCHED, imported, given)
    assert "PATH" not in env and "GONE" not in env


def test_children_share_nothing_of_each_other() -> None:
    first = instance_environ(LAUNCHED, LAUNCHED, {**LAUNCHED, "CATTERY_INSTANCE_TOKEN": "a"})
    second = instance_environ(LAUNCHED, LAUNCHED, {**LAUNCHED, "CATTERY_INSTANCE_TOKEN": "b"})
    assert first["CATTERY_INSTANCE_TOKEN"] == "a" and second["CATTERY_INSTANCE_TOKEN"] == "b"
    assert LAUNCHED == {"PATH": "/bin", "SECRET": "from-secret-set", "GONE": "x"}
