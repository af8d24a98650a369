"""numpy <-> tensorflow.TensorProto without TensorFlow (the client must not need it).

Numeric tensors travel as `tensor_content` (raw little-endian bytes, what
tf.make_tensor_proto writes), or with `as_fields=True` in the typed `*_val` fields (what TF
Serving's Predict answers with: Tensor::AsProtoField); strings as `string_val`. Reading accepts both layouts, and the
`*_val` fields with a single value broadcast to the shape, as TensorFlow's Tensor::FromProto does.
"""

import numpy as np

__all__ = ["DTYPES", "DTYPE_NAMES", "TensorParseError", "to_tensor_proto", "to_ndarray",
           "num_elements"]

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
    proto = tensor_proto_class()
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        proto.dtype = 7
        proto.string_val.extend(
            value.encode() if isinstance(value, str) else bytes(value) for value in array.reshape(-1))
    else:
        enum = _ENUM_OF.get(array.dtype)
        if enum is None:
            raise ValueError(f"Cannot send numpy dtype {array.dtype} as a tensor.")
        proto.dtype = enum
        if as_fields:
            _, field, _ = DTYPES[enum]
            values = array.reshape(-1)
            if enum == 19:  # half_val holds the float16 bit patterns
                values = values.view(np.uint16)
            getattr(proto, field).extend(values.tolist())
        else:
            proto.tensor_content = np.ascontiguousarray(array).astype(
                array.dtype.newbyteorder("<"), copy=False).tobytes()
    for size in array.shape:
        proto.tensor_shape.dim.add(size=int(size))
    return proto


def to_ndarray(proto, max_elements=None):
    """The numpy array a TensorProto describes; TensorParseError if it is not a valid one."""
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
    if proto.tensor_content:
        itemsize = np.dtype(dtype).itemsize
        if len(proto.tensor_content) != count * itemsize:
            raise TensorParseError(f"tensor_content of {len(proto.tensor_content)} bytes for "
                                   f"shape {shape} of {np.dtype(dtype).name}")
        return np.frombuffer(proto.tensor_content, np.dtype(dtype).newbyteorder("<")).astype(
            dtype).reshape(shape)
    values = getattr(proto, field)
    if proto.dtype == 19:  # half_val holds the float16 bit patterns
        values = np.asarray(values, np.uint16).view(np.float16)
    if len(values) > count:
        raise TensorParseError(f"{len(values)} values for shape {shape}")
    array = np.zeros(count, dtype)
    if len(values):
        array[:len(values)] = values
        array[len(values):] = values[-1]  # TensorFlow repeats the last value
    return array.reshape(shape)
