"""The `[auth]` section and the key store: parsing, constant-time checks, reload, no key in messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gliclass_core.auth import ANONYMOUS, AuthConfig, KeyStore, bearer_token, parse_auth_config
from gliclass_core.config import ConfigError, load_config

KEY = "k3y-0123456789abcdef"
OTHER = "0th3r-0123456789abcdef"


def test_inline_keys_verify_and_give_a_fingerprint_not_the_key() -> None:
    store = KeyStore(parse_auth_config({"api_keys": [KEY, OTHER]}))
    caller = store.verify(KEY)
    assert store.enabled and caller is not None and caller.name.startswith("key-")
    assert KEY not in caller.name and caller != store.verify(OTHER)
    assert store.verify(KEY[:-1]) is None and store.verify(None) is None and store.verify("") is None
    assert store.verify_authorization(f"Bearer {KEY}") == caller
    assert store.verify_authorization(f"bearer   {KEY} ") == caller  # the scheme is case-insensitive
    assert store.verify_authorization(f"Basic {KEY}") is None and store.verify_authorization(KEY) is None
    assert KEY not in repr(store.config)


def test_no_keys_means_open() -> None:
    store = KeyStore(parse_auth_config({}))
    assert not store.enabled and store.verify(None) is ANONYMOUS and store.verify("anything") is ANONYMOUS


def test_environment_overrides_give_keys_as_a_list_or_comma_separated(tmp_path: Path) -> None:
    # `api_keys` is secret-named, so the environment value arrives verbatim as a string.
    for value in (f"{KEY},{OTHER}", f'["{KEY}", "{OTHER}"]', f" {KEY} {OTHER} "):
        config = load_config(env={"GLICLASS_AUTH__API_KEYS": value})
        assert parse_auth_config(config.section("auth")).api_keys == (KEY, OTHER)
    keys = tmp_path / "keys"
    keys.write_text(f"# ops keys\n{KEY}\n\n{OTHER}  # the batch team\n")
    config = load_config(env={"GLICLASS_AUTH__API_KEYS_FILE": str(keys)})
    store = KeyStore(parse_auth_config(config.section("auth")))
    assert len(store) == 2 and store.verify(OTHER) is not None


@pytest.mark.parametrize(
    "section",
    [
        {"api_keys": ["short"]},
        {"api_keys": ["has space in it 0123456789"]},
        {"api_keys": "[broken"},
        {"api_keys": [1]},
        {"api_keys_file": ""},
        {"public_metrics": "yes"},
        {"api_key": [KEY]},
    ],
)
def test_bad_sections_are_refused_naming_the_key(section: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"\[auth\]") as info:
        parse_auth_config(section)
    assert "0123456789" not in str(info.value)  # never quotes a key, even a bad one


def test_a_bad_line_in_the_keys_file_is_named_by_number_not_content(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\nsecret with spaces 123456789\n")
    with pytest.raises(ConfigError, match="line 2") as info:
        KeyStore(AuthConfig(api_keys_file=str(keys)))
    assert "secret" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        KeyStore(AuthConfig(api_keys_file=str(tmp_path / "missing")))
    keys.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="no keys"):
        KeyStore(AuthConfig(api_keys_file=str(keys)))


def test_reload_swaps_keys_and_never_turns_authentication_off(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    config = AuthConfig(api_keys_file=str(keys))
    store = KeyStore(config)
    keys.write_text(OTHER + "\n")
    assert store.reload(config) == 1
    assert store.verify(OTHER) is not None and store.verify(KEY) is None
    keys.write_text("")
    with pytest.raises(ConfigError):
        store.reload(config)
    with pytest.raises(ConfigError, match="cannot turn authentication off"):
        store.reload(AuthConfig())
    assert store.verify(OTHER) is not None  # the running keys stay


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=300)))
def test_any_header_value_is_a_caller_or_none(header: str | None) -> None:
    store = KeyStore(AuthConfig(api_keys=(KEY,)))
    caller = store.verify_authorization(header)
    assert caller is None or bearer_token(header) == KEY


def test_dev_stays_open_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from gliclass_core.config import parse_config
    from server.app.commands.dev import add_arguments, dev_config

    monkeypatch.setenv("GLICLASS_AUTH__API_KEYS", KEY)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = parse_config(dev_config("127.0.0.1:9092", parser.parse_args([])))
    assert not KeyStore(parse_auth_config(config.section("auth"))).enabled
