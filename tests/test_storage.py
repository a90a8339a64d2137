"""Local filesystem storage: keys, listing, ranges, atomic writes, escapes refused."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mpr.errors import NotFound, StorageError
from mpr.local_storage import TMP_PREFIX, LocalStorage
from mpr.settings import Settings
from mpr.storage import get_storage, media_in, safe_key


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    root = tmp_path / "root"
    root.mkdir()
    return LocalStorage(str(root), Settings())


def write(store: LocalStorage, key: str, data: bytes) -> Path:
    path = store.base / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../etc/passwd",
        "..",
        "a\\..\\b",
        "%2e%2e/etc/passwd",
        "%252e%252e/x",
        "x\x00.mp4",
        "C:/windows/x",
        "",
    ],
)
def test_keys_that_escape_the_root_are_refused(store: LocalStorage, key: str) -> None:
    with pytest.raises(StorageError):
        store.stat(key)
    with pytest.raises(StorageError):
        store.put(key, Path(__file__))
    with pytest.raises(StorageError):
        store.open_read(key)
    with pytest.raises(StorageError):
        store.delete(key)


def test_safe_key_normalises_harmless_keys() -> None:
    assert safe_key("a/./b.mp4") == "a/b.mp4"
    assert safe_key("a//b.mp4") == "a/b.mp4"


def test_symlink_escaping_the_root_is_not_followed(store: LocalStorage, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, store.base / "link.mp4")
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    (outside_dir / "x.mp4").write_bytes(b"x")
    os.symlink(outside_dir, store.base / "dirlink")
    with pytest.raises(StorageError, match="outside"):
        store.open_read("link.mp4")
    with pytest.raises(StorageError):
        store.put("dirlink/new.mp4", secret)
    assert [o.key for o in store.list()] == []
    assert not (outside_dir / "new.mp4").exists()


def test_symlink_inside_the_root_is_fine(store: LocalStorage) -> None:
    write(store, "real.mp4", b"abc")
    os.symlink(store.base / "real.mp4", store.base / "alias.mp4")
    assert store.open_read("alias.mp4").read() == b"abc"


def test_list_is_recursive_sorted_and_filters_by_prefix(store: LocalStorage) -> None:
    for key in ("b.mp4", "a/z.mp3", "a/b/c.mkv", "c/d.wav"):
        write(store, key, b"1234")
    write(store, f"a/{TMP_PREFIX}partial.mp4", b"partial")
    assert [o.key for o in store.list()] == ["a/b/c.mkv", "a/z.mp3", "b.mp4", "c/d.wav"]
    assert [o.key for o in store.list("a/")] == ["a/b/c.mkv", "a/z.mp3"]
    assert [o.key for o in store.list("a/b")] == ["a/b/c.mkv"]
    assert all(o.size == 4 for o in store.list())
    with pytest.raises(StorageError):
        list(store.list("../"))


def test_list_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert list(LocalStorage(str(tmp_path / "nope")).list()) == []


def test_stat_exists_and_not_found(store: LocalStorage) -> None:
    write(store, "x/y.mp4", b"hello")
    info = store.stat("x/y.mp4")
    assert (info.key, info.size) == ("x/y.mp4", 5)
    assert store.exists("x/y.mp4") and not store.exists("x/z.mp4")
    with pytest.raises(NotFound):
        store.stat("x/z.mp4")
    with pytest.raises(NotFound):
        store.stat("x")  # a directory is not an object


def test_open_read_byte_ranges(store: LocalStorage) -> None:
    data = bytes(range(256)) * 4
    write(store, "r.bin", data)
    assert store.open_read("r.bin").read() == data
    assert store.open_read("r.bin", 10, 19).read() == data[10:20]
    assert store.open_read("r.bin", 1000).read() == data[1000:]
    assert store.open_read("r.bin", 1020, 5000).read() == data[1020:]
    with store.open_read("r.bin", 5, 6) as fh:
        assert fh.read(1) == data[5:6] and fh.read() == data[6:7]
    with pytest.raises(StorageError):
        store.open_read("r.bin", 10, 5)


def test_put_is_atomic_and_creates_folders(store: LocalStorage, tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1.bin", tmp_path / "v2.bin"
    v1.write_bytes(b"1" * 2_000_000)
    v2.write_bytes(b"2" * 2_000_000)
    info = store.put("deep/er/out.bin", v1)
    assert info.size == 2_000_000
    target = store.base / "deep/er/out.bin"
    assert target.read_bytes() == v1.read_bytes()
    # readers never see a partial or mixed file while the object is replaced again and again
    bad: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            if data not in (v1.read_bytes(), v2.read_bytes()):
                bad.append(len(data))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(20):
        store.put("deep/er/out.bin", v2 if i % 2 == 0 else v1)
    stop.set()
    t.join()
    assert bad == []
    assert not [p for p in (store.base / "deep/er").iterdir() if p.name.startswith(TMP_PREFIX)]


def test_put_refuses_a_missing_local_file(store: LocalStorage, tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        store.put("a.mp4", tmp_path / "missing.mp4")


def test_delete_is_idempotent(store: LocalStorage) -> None:
    write(store, "d.mp4", b"x")
    store.delete("d.mp4")
    store.delete("d.mp4")
    assert not store.exists("d.mp4")


def test_local_copy_and_local_path(store: LocalStorage) -> None:
    path = write(store, "l/c.mp4", b"abc")
    with store.local_copy("l/c.mp4") as p:
        assert p == path and p.read_bytes() == b"abc"
    with pytest.raises(NotFound), store.local_copy("l/missing.mp4"):
        pass
    assert store.local_path("l/new.mp4") == store.base / "l/new.mp4"


def test_url_is_none_unless_a_public_base_is_configured(tmp_path: Path) -> None:
    root = str(tmp_path / "in")
    assert LocalStorage(root, Settings(media_in=root)).url("a b.mp4") is None
    public = LocalStorage(root, Settings(media_in=root, media_base_url="https://cdn.example/in/"))
    assert public.url("dir/a b.mp4") == "https://cdn.example/in/dir/a%20b.mp4"


def test_file_url_roots_and_registry(media) -> None:
    store = get_storage("file://" + str(media["in"]))
    assert isinstance(store, LocalStorage) and store.base == media["in"]
    assert isinstance(media_in(), LocalStorage)
