"""The plugin system as a user meets it: third-party presets, missing plugins, `mpr plugins`."""

from __future__ import annotations

import pytest

from mpr import hookimpl
from mpr.cli import main
from mpr.errors import PluginError
from mpr.executors import get_executor
from mpr.plugins import load_plugins, register_plugin, reset_plugins, unregister_plugin
from mpr.presets import Preset
from mpr.storage import get_storage


class TinyPresetPlugin:
    @hookimpl
    def register_presets(self, register):
        register(
            Preset(
                name="tiny-240p",
                container="mp4",
                video_codec="libx264",
                crf=30,
                height=240,
                audio_codec="aac",
                audio_bitrate="64k",
            )
        )


@pytest.fixture
def tiny(media):
    plugin = TinyPresetPlugin()
    register_plugin(plugin, name="mpr-tiny")
    try:
        yield plugin
    finally:
        unregister_plugin(plugin)


async def test_third_party_preset_appears_after_sync(sqlite_db, tiny) -> None:
    from mpr.models import TranscodePreset
    from mpr.presets import sync_presets

    assert load_plugins().owners[("preset", "tiny-240p")] == "mpr-tiny"
    await sync_presets()
    row = await TranscodePreset.get(name="tiny-240p")
    assert (row.source, row.height) == ("mpr-tiny", 240)


def test_plugins_command_lists_what_each_plugin_registers(tiny, capsys) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "mpr-tiny" in out and "tiny-240p" in out
    assert "mpr-local" in out and "executors: local" in out
    assert "storage schemes: file" in out
    assert "mpr-storage-s3" in out and "s3" in out


def test_registering_a_name_twice_is_refused(media) -> None:
    class Dup:
        @hookimpl
        def register_presets(self, register):
            register(Preset(name="h264-720p", container="mp4", video_codec="libx264"))

    plugin = Dup()
    with pytest.raises(PluginError, match="registered twice"):
        register_plugin(plugin, name="mpr-dup")
    reset_plugins()


def test_missing_executor_names_the_package_to_install(media, monkeypatch) -> None:
    monkeypatch.setenv("MPR_LOAD_PLUGINS", "mpr-local")
    reset_plugins()
    with pytest.raises(PluginError, match=r"mpr-gcp \(pip install -e plugins/mpr_gcp\)"):
        get_executor("gcp")
    with pytest.raises(PluginError, match="mpr-lambda"):
        get_executor("lambda")
    assert get_executor("local").name == "local"


def test_missing_storage_backend_names_the_package_to_install(media, monkeypatch) -> None:
    monkeypatch.setenv("MPR_LOAD_PLUGINS", "mpr-local")
    reset_plugins()
    with pytest.raises(PluginError, match="mpr-storage-s3"):
        get_storage("s3://bucket/media/")
    with pytest.raises(PluginError, match="no storage backend for scheme 'ftp'"):
        get_storage("ftp://host/x")


def test_cli_fails_at_start_for_a_missing_executor(media, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MPR_LOAD_PLUGINS", "mpr-local")
    monkeypatch.setenv("MPR_EXECUTOR", "gcp")
    reset_plugins()
    assert main(["transcode", "x.mp4", "--preset", "copy", "--queue"]) == 1
    err = capsys.readouterr().err
    assert "Error:" in err and "mpr-gcp" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("env", "args", "package"),
    [
        ({"MPR_EXECUTOR": "lambda"}, ["serve", "--port", "1"], "mpr-lambda"),
        ({"MEDIA_IN": "s3://bucket/in/"}, ["scan"], "mpr-storage-s3"),
        ({"MEDIA_OUT": "gs://bucket/out/"}, ["serve", "--port", "1"], "mpr-storage-s3"),
    ],
)
def test_start_up_fails_naming_the_missing_package(media, monkeypatch, capsys, env, args, package) -> None:
    monkeypatch.setenv("MPR_LOAD_PLUGINS", "mpr-local")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_plugins()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert package in err and "Traceback" not in err
