"""numpy <-> tensorflow.TensorProto without TensorFlow (the client must not need it).

Numeric tensors travel as `tensor_content` (raw little-endian bytes, what
tf.make_tensor_proto writes), or with `as_fields=True` in the typed `*_val` fields (what TF
Serving's Predict answers with: Tensor::AsProtoField); strings as `string_val`. Reading accepts
both layouts, and the `*_val` fields with a single value broadcast to the shape, as TensorFlow's
Tensor::FromProto does.

Numeric values are written and read as one run of little-endian bytes (serving/wire.py):
tensor_content, and float_val / double_val, packed fixed-width fields whose run holds the same
bytes. Protobuf's repeated-field API would convert them value by value, at about 25 ns a value
with its upb runtime: 2 ms each way for 64 embeddings of 1024 floats. The other typed fields are
varints and take that path.
"""

import numpy as np

from serving.wire import field_header, length_delimited_run

__all__ = ["DTYPES", "DTYPE_NAMES", "TensorParseError", "to_tensor_proto", "fill_tensor_proto",
           "tensor_proto_chunks", "to_ndarray", "num_elements"]

# DataType enum value -> (numpy dtype, repeated field holding values, TensorFlow's name)
DTYPES = {
    1: (np.float32, "float_val", "float"),
    2: (np.float64, "double_val", "double"),
    3: (np.int32, "int_val", "int32"),
    4: (np.uint8, "int_val", "uint8"),
    5: (np.int16, "int_val", "int16"),
    6: (np.int8, "int_val", "int8"),
    7: (object, "string_val", "string"),
    9: (np.int64, "int64_val", "int64"),
    10: (np.bool_, "bool_val", "bool"),
    17: (np.uint16, "int_val", "uint16"),
    19: (np.float16, "half_val", "half"),
    22: (np.uint32, "uint32_val", "uint32"),
    23: (np.uint64, "uint64_val", "uint64"),
}
DTYPE_NAMES = {enum: name for enum, (_, _, name) in DTYPES.items()}
_ENUM_OF = {np.dtype(dtype): enum for enum, (dtype, _, _) in DTYPES.items() if dtype is not object}
# TensorProto's field numbers (tensorflow/core/framework/tensor.proto) of the fields that hold
# values as little-endian bytes: `bytes tensor_content = 4`, and the typed fields of fixed-width
# values, `repeated float float_val = 5 [packed = true]`, `repeated double double_val = 6 [...]`.
_TENSOR_CONTENT = 4
_FIXED_WIDTH_FIELDS = {"float_val": 5, "double_val": 6}


class TensorParseError(ValueError):
    """A TensorProto that does not describe a valid tensor."""


def num_elements(shape):
    count = 1
    for size in shape:
        count *= size
    return count


def to_tensor_proto(array, tensor_proto_class, as_fields=False):
    """A numpy array (numeric, or bytes / str objects) as a `tensor_proto_class` message:
    numbers in tensor_content, or in the typed value field with `as_fields`."""
    return fill_tensor_proto(tensor_proto_class(), array, as_fields)


def fill_tensor_proto(proto, array, as_fields=False):
    """Write `array` into the empty TensorProto `proto` as `to_tensor_proto` does, and return it
    (for a map value such as `response.outputs[alias]`, this saves a CopyFrom, which upb makes
    value by value)."""
    array = np.asarray(array)
    chunks = tensor_proto_chunks(array, type(proto), as_fields)
    if chunks is not None:
        proto.MergeFromString(b"".join(chunks))
        return proto
    if array.dtype.kind in "OSU":
        proto.dtype = 7
        proto.string_val.extend(
            value.encode() if isinstance(value, str) else bytes(value) for value in array.reshape(-1))
    else:  # a typed field of varints
        proto.dtype = _ENUM_OF[array.dtype]
        _, field, _ = DTYPES[proto.dtype]
        values = array.reshape(-1)
        if proto.dtype == 19:  # half_val holds the float16 bit patterns
            values = values.view(np.uint16)
        getattr(proto, field).extend(values.tolist())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=int(size))
    return proto


def tensor_proto_chunks(array, tensor_proto_class, as_fields=False):
    """The serialized TensorProto of `array` (as `to_tensor_proto` writes it) as bytes-like
    chunks to join, or None for values that are not little-endian bytes on the wire (strings, and
    the varint fields of `as_fields`). Protobuf serializes the dtype and shape; the values follow
    as one field (tensor_content, or a packed float_val / double_val) read from the array's
    memory, so that the join is their only copy."""
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        return None
    enum = _ENUM_OF.get(array.dtype)
    if enum is None:
        raise ValueError(f"Cannot send numpy dtype {array.dtype} as a tensor.")
    number = _FIXED_WIDTH_FIELDS.get(DTYPES[enum][1]) if as_fields else _TENSOR_CONTENT
    if number is None:
        return None
    header = tensor_proto_class(dtype=enum)
    for size in array.shape:
        header.tensor_shape.dim.add(size=int(size))
    if not array.size:  # protobuf writes neither empty bytes nor an empty packed field
        return [header.SerializeToString()]
    values = np.ascontiguousarray(array.reshape(-1).astype(array.dtype.newbyteorder("<"),
                                                           copy=False)).view(np.uint8)
    return [header.SerializeToString(), field_header(number, values.nbytes), values]


def _typed_values(proto, dtype, field):
    """The values in the typed field `field`: an ndarray of `dtype`, or the repeated field."""
    number = _FIXED_WIDTH_FIELDS.get(field)
    if number is not None:
        serialized = proto.SerializeToString()
        run = length_delimited_run(serialized, number)
        if run is not None:
            offset, size = run
            itemsize = np.dtype(dtype).itemsize
            return np.frombuffer(serialized, np.dtype(dtype).newbyteorder("<"), size // itemsize,
                                 offset)
    values = getattr(proto, field)
    if field == "half_val":  # the float16 bit patterns
        return np.asarray(values, np.uint16).view(np.float16)
    return values


def to_ndarray(proto, max_elements=None, copy=True):
    """The numpy array a TensorProto describes; TensorParseError if it is not a valid one.
    copy=False may return a read-only array over bytes read from the proto (one copy less)."""
    if proto.dtype not in DTYPES:
        raise TensorParseError(f"unsupported dtype enum {proto.dtype}")
    dtype, field, _ = DTYPES[proto.dtype]
    if proto.tensor_shape.unknown_rank:
        raise TensorParseError("tensor of unknown rank")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise TensorParseError(f"negative dimension in shape {shape}")
    count = num_elements(shape)
    if max_elements is not None and count > max_elements:
        raise TensorParseError(f"tensor of shape {shape} has {count} elements, more than the "
                               f"{max_elements} this server accepts")
    if dtype is object:
        values = list(proto.string_val)
        if len(values) != count and not (len(values) == 1 and count > 0):
            raise TensorParseError(f"{len(values)} strings for shape {shape}")
        array = np.empty(count, dtype=object)
        array[:] = values if len(values) == count else values * count
        return array.reshape(shape)
    content = proto.tensor_content
    if content:
        itemsize = np.dtype(dtype).itemsize
        if len(content) != count * itemsize:
            raise TensorParseError(f"tensor_content of {len(content)} bytes for shape {shape} "
                                   f"of {np.dtype(dtype).name}")
        return np.frombuffer(content, np.dtype(dtype).newbyteorder("<")).astype(
            dtype, copy=copy).reshape(shape)
    values = _typed_values(proto, dtype, field)
    if len(values) > count:
        raise TensorParseError(f"{len(values)} values for shape {shape}")
    if len(values) == count and isinstance(values, np.ndarray):
        return values.astype(dtype, copy=copy).reshape(shape)
    array = np.zeros(count, dtype)
    if len(values):
        array[:len(values)] = values
        array[len(values):] = values[-1]  # TensorFlow repeats the last value
    return array.reshape(shape)
