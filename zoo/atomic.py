"""Files written whole or not at all, the one way the zoo writes them.

`atomic_file(path)` opens a temporary file beside `path`; when the block ends it is flushed to
disk and renamed over `path` (os.replace: atomic on POSIX), then the folder's entry is synced. On
any error the temporary file is removed and `path` is left as it was, so a killed run never
leaves half a file where a whole one is expected. `write_bytes`, `write_text` and `write_json`
are the common cases. (Writers that need a file name, not a stream, such as Keras's
save_weights, h5py or faiss, rename their own temporary files.)
"""

import contextlib
import json
import os
import tempfile


def _fsync_directory(directory):
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_file(path, mode="wb"):
    """A stream ("wb" or "w") whose content becomes `path` when the block ends without error.
    The folder is created if need be; the file is readable by all (0644), as open() makes it."""
    if mode not in ("wb", "w"):
        raise ValueError(f"Expected mode 'wb' or 'w', got {mode!r}.")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                         dir=directory)
    try:
        os.fchmod(handle, 0o644)  # mkstemp makes it private (0600)
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


def write_bytes(path, data):
    """Write bytes (or text, UTF-8 encoded) to `path` atomically; return `path`."""
    with atomic_file(path) as stream:
        stream.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def write_text(path, text):
    return write_bytes(path, text)


def write_json(path, value, indent=2, sort_keys=False):
    """`value` as JSON (with a final newline) written to `path` atomically; return `path`."""
    return write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")
