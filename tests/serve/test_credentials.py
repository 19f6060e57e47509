"""`flowerd service print` writes LoadCredential= for file: references under the unit's
credentials directory, wherever they are set, and reads none of them (issue 26)."""

from __future__ import annotations

from pathlib import Path

from tests.serve import cli, make_project


def test_load_credential_lines_for_references_under_the_credentials_directory(tmp_path: Path):
    creds = "/run/credentials/flowerd-p.service"
    base = make_project(
        tmp_path / "p",
        f"""
        [daily]
        pipeline = "hello_world"
        interval = "1d"
        inputs = {{ name = "file:{creds}/greeting_name", other = "file:/etc/elsewhere" }}
        notify = ["file:{creds}/slack_url"]
        """,
    )
    (base / "flowerd.toml").write_text(
        f'http_tokens = {{ alice = {{ token = "file:{creds}/alice_token", role = "admin" }} }}\n'
    )
    done = cli(base, "service", "print")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("LoadCredential=")]
    assert lines == [
        "LoadCredential=alice_token",
        "LoadCredential=greeting_name",
        "LoadCredential=slack_url",
    ]  # /etc/elsewhere is read where it is: no credential
    plain = make_project(tmp_path / "q", "[d]\npipeline = 'hello_world'\ninterval = '1d'\n")
    assert "LoadCredential" not in cli(plain, "service", "print").stdout
