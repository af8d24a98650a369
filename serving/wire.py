"""The protobuf wire format, for the few messages whose bytes serving writes or reads itself.

A large tensor is copied several times on its way through protobuf's Python API (into the
message, into the serialized bytes, out again as a Python bytes object), and its typed value
fields are converted value by value. The tensors module avoids both by writing and reading the
values' length-delimited field directly (https://protobuf.dev/programming-guides/encoding/):
a key (field number and wire type), a varint length, then the payload, which for tensor_content
and the packed float_val / double_val is the values' little-endian bytes. Everything else in
those messages is still serialized and parsed by protobuf.
"""

__all__ = ["VARINT", "FIXED64", "LENGTH_DELIMITED", "FIXED32", "field_header", "map_entry_chunks",
           "length_delimited_run"]

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5  # the wire types a message can hold
_MAP_KEY, _MAP_VALUE = 1, 2  # a map entry is a message {key = 1; value = 2}


def _varint(value):
    """`value` (>= 0) as a varint."""
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def field_header(number, size):
    """The key and length that precede a `size`-byte payload of length-delimited field `number`."""
    return _varint(number << 3 | LENGTH_DELIMITED) + _varint(size)


def map_entry_chunks(number, key, value_chunks):
    """Chunks (to join) of one entry {key: str, value: a message serialized as `value_chunks`}
    of map field `number`."""
    value_size = sum(len(chunk) for chunk in value_chunks)
    key_bytes = key.encode()
    entry = [field_header(_MAP_KEY, len(key_bytes)), key_bytes,
             field_header(_MAP_VALUE, value_size)]
    entry_size = sum(len(chunk) for chunk in entry) + value_size
    return [field_header(number, entry_size), *entry, *value_chunks]


def _read_varint(data, position):
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def length_delimited_run(serialized, number):
    """(offset, size) of the payload of field `number` in the serialized message `serialized`;
    (0, 0) if the field is absent, None if it is not there as one length-delimited run (as
    protobuf itself writes a packed field), e.g. as unpacked values or in several runs."""
    runs, position, end = [], 0, len(serialized)
    while position < end:
        key, position = _read_varint(serialized, position)
        field, wire_type = key >> 3, key & 7
        if wire_type == LENGTH_DELIMITED:
            size, position = _read_varint(serialized, position)
            if field == number:
                runs.append((position, size))
            position += size
        elif field == number:
            return None
        elif wire_type == VARINT:
            _, position = _read_varint(serialized, position)
        elif wire_type in (FIXED64, FIXED32):
            position += 8 if wire_type == FIXED64 else 4
        else:  # groups, which a TensorProto does not have
            return None
    if len(runs) > 1:
        return None
    return runs[0] if runs else (0, 0)
