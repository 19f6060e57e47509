"""[hamilton_ui] and [openlineage] without their packages: a settings error that says
what to install (this venv has them, so their absence is what is faked here)."""

from __future__ import annotations

import pytest

from daemon.errors import SettingsError
from daemon.observe import sections
from daemon.settings import load_settings


@pytest.mark.parametrize(
    ("section", "package"),
    [
        ('[hamilton_ui]\nurl = "http://x"\nproject_id = 1\nusername = "a"\n',
         "apache-hamilton-sdk"),
        ('[openlineage]\nurl = "http://x"\n', "openlineage-python"),
    ],
)  # fmt: skip
def test_a_sink_without_its_package_says_what_to_install(tmp_path, monkeypatch, section, package):
    monkeypatch.setattr(sections, "_installed", lambda module: False)
    (tmp_path / "flowerd.toml").write_text(section)
    with pytest.raises(SettingsError, match=f"needs {package}.*pip install 'flowerd\\[observe\\]'"):
        load_settings(tmp_path)


def test_an_api_key_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWERD_TEST_HAMILTON_KEY", "s3cret")
    (tmp_path / "flowerd.toml").write_text(
        '[hamilton_ui]\nurl = "http://x"\nproject_id = 1\nusername = "a"\n'
        'api_key = "env:FLOWERD_TEST_HAMILTON_KEY"\n'
    )
    settings = load_settings(tmp_path)
    from daemon.observe import hamilton_ui

    sink = hamilton_ui.make(settings, dict(settings.hamilton_ui))
    try:
        assert sink.headers == {"x-api-user": "a", "x-api-key": "s3cret"}
    finally:
        sink.close()


def test_an_api_key_from_a_file_is_read_by_the_sink_not_by_settings(tmp_path):
    key = tmp_path / "key"
    (tmp_path / "flowerd.toml").write_text(
        '[hamilton_ui]\nurl = "http://x"\nproject_id = 1\nusername = "a"\n'
        f'api_key = "file:{key}"\n'
    )
    settings = load_settings(tmp_path)  # the file is not there yet: settings never read it
    key.write_text("k3y-from-file\n")
    from daemon.observe import hamilton_ui

    sink = hamilton_ui.make(settings, dict(settings.hamilton_ui))
    try:
        assert sink.headers == {"x-api-user": "a", "x-api-key": "k3y-from-file"}
    finally:
        sink.close()
