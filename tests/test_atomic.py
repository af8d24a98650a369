"""zoo.atomic: files are written whole or not at all."""

import json
import os
import stat

import pytest

from zoo.atomic import atomic_file, write_bytes, write_json, write_text


def test_written_files_appear_whole_with_ordinary_permissions(tmp_path):
    path = tmp_path / "deeper" / "a.json"
    assert write_json(str(path), {"b": 1, "a": [1, 2]}, indent=1) == str(path)
    assert json.loads(path.read_text()) == {"b": 1, "a": [1, 2]}
    assert path.read_text().endswith("\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    write_text(str(tmp_path / "t.txt"), "é")
    assert (tmp_path / "t.txt").read_bytes() == "é".encode()
    write_bytes(str(tmp_path / "b.bin"), b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "kept.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(str(path), "w") as stream:
            stream.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["kept.txt"]
    with pytest.raises(TypeError):
        write_json(str(path), {"not serialisable": object()})
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["kept.txt"]


def test_unknown_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="mode 'wb' or 'w'"):
        with atomic_file(str(tmp_path / "x"), "a"):
            pass
