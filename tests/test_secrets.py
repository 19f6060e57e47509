"""Secret references: `env:NAME` / `file:/path` resolved by their user, `literal:` passes
through, resolved values show as `***`, and what cannot be resolved is named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon import secrets
from daemon.secrets import MASK, Secret, SecretError, SecretRef

WHERE = "schedules/hooks.toml: [deploy] field 'on_webhook.secret'"


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("env:HOOK_SECRET", SecretRef("env", "HOOK_SECRET")),
        ("env:_x9", SecretRef("env", "_x9")),
        ("file:/run/credentials/flowerd/hook", SecretRef("file", "/run/credentials/flowerd/hook")),
        ("env:9NAME", None),  # a name cannot start with a digit
        ("env:A-B", None),
        ("env:", None),
        ("env:A ", None),
        (" env:A", None),
        ("ENV:A", None),
        ("file:relative/path", None),  # only absolute paths
        ("file:", None),
        ("literal:env:A", None),
        ("plain", None),
        (42, None),
        (None, None),
    ],
)
def test_parse_takes_only_the_exact_forms(text, ref):
    assert secrets.parse(text) == ref
    assert secrets.is_reference(text) is (ref is not None)


def test_env_reference_resolves_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLOWERD_TEST_SECRET", "s3cr3t")
    assert secrets.resolve("env:FLOWERD_TEST_SECRET") == "s3cr3t"
    assert secrets.resolve("env:X", environ={"X": "given"}) == "given"
    assert secrets.resolve("env:X", environ={"X": ""}) == ""  # set but empty is set


def test_file_reference_reads_the_file_without_its_last_newline(tmp_path: Path):
    path = tmp_path / "hook"
    path.write_text("from-a-file\n")
    assert secrets.resolve(f"file:{path}") == "from-a-file"
    path.write_text("two\nlines\r\n")
    assert secrets.resolve(f"file:{path}") == "two\nlines"


def test_literal_prefix_passes_the_rest_as_it_is():
    assert secrets.resolve("literal:env:HOME") == "env:HOME"
    assert secrets.resolve("literal:literal:x") == "literal:x"  # one prefix removed
    assert secrets.resolve("just text") == "just text"
    assert secrets.resolve(3.5) == 3.5
    assert secrets.shown("literal:file:/etc/passwd") == "file:/etc/passwd"


def test_a_missing_variable_is_named_with_where_it_is_set(monkeypatch):
    monkeypatch.delenv("FLOWERD_NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(SecretError) as caught:
        secrets.resolve("env:FLOWERD_NOT_SET_ANYWHERE", where=WHERE)
    assert str(caught.value) == (
        f"{WHERE}: environment variable FLOWERD_NOT_SET_ANYWHERE is not set "
        "(from 'env:FLOWERD_NOT_SET_ANYWHERE')"
    )
    assert secrets.problem("env:FLOWERD_NOT_SET_ANYWHERE", where=WHERE) == str(caught.value)
    assert secrets.problem("env:FLOWERD_NOT_SET_ANYWHERE") .startswith("environment variable")


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path):
    gone = tmp_path / "gone"
    assert secrets.problem(f"file:{gone}", where=WHERE) == (
        f"{WHERE}: secret file {gone} does not exist"
    )
    assert secrets.problem(f"file:{tmp_path}", where=WHERE).startswith(
        f"{WHERE}: secret file {tmp_path} cannot be read: "
    )
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked"
        locked.write_text("x")
        locked.chmod(0)
        assert "Permission denied" in secrets.problem(f"file:{locked}", where=WHERE)
    assert secrets.problem("no reference", where=WHERE) is None


def test_resolve_tree_walks_inputs_and_names_the_key(monkeypatch):
    monkeypatch.setenv("FLOWERD_TEST_DB_PASSWORD", "pw")
    monkeypatch.delenv("FLOWERD_NOT_SET_ANYWHERE", raising=False)
    inputs = {
        "db": {"password": "env:FLOWERD_TEST_DB_PASSWORD", "port": 5432},
        "names": ["a", "literal:env:B"],
        "tags": ("x",),
    }
    assert secrets.resolve_tree(inputs, where="inputs") == {
        "db": {"password": "pw", "port": 5432},
        "names": ["a", "env:B"],
        "tags": ("x",),
    }
    bad = {"a": [1, "env:FLOWERD_NOT_SET_ANYWHERE"], "b": "env:FLOWERD_NOT_SET_ANYWHERE"}
    assert secrets.tree_problems(bad, where="f.toml: [s] field 'inputs'") == [
        "f.toml: [s] field 'inputs'.a[1]: environment variable FLOWERD_NOT_SET_ANYWHERE is not "
        "set (from 'env:FLOWERD_NOT_SET_ANYWHERE')",
        "f.toml: [s] field 'inputs'.b: environment variable FLOWERD_NOT_SET_ANYWHERE is not "
        "set (from 'env:FLOWERD_NOT_SET_ANYWHERE')",
    ]
    with pytest.raises(SecretError, match=r"inputs\.a\[1\]: environment variable"):
        secrets.resolve_tree(bad, where="inputs")


def test_a_resolved_secret_never_prints():
    secret = Secret("hunter2")
    assert secret.reveal() == "hunter2"
    for text in (str(secret), repr(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert "hunter2" not in text
        assert MASK in text
    assert secrets.shown("env:HOOK") == MASK
    assert secrets.shown("file:/x") == MASK
    assert secrets.shown(7) == 7


def test_mask_hides_every_secret_value_in_text():
    text = "url https://u:tok-abc@host/x?k=tok-abc and tok-abcdef"
    assert secrets.mask(text, ["tok-abc", Secret("tok-abcdef"), ""]) == (
        "url https://u:***@host/x?k=*** and ***"
    )
    assert secrets.mask("nothing", []) == "nothing"
