/*
 * engine_plugin.h: the C ABI of vision pipeline engine plugins, version 1.1.
 *
 * This is the same ABI as the Rust SDK's `plugin_sdk::abi` module; a plugin written in C or
 * C++ includes this header, fills an EnginePluginTable and exports `engine_plugin_entry`.
 *
 * Rules:
 * - The host reads abi_major, abi_minor and struct_size first and refuses a table whose
 *   abi_major differs from its own (or whose abi_minor is newer).
 * - Strings are NUL-terminated UTF-8. Declarations (names, docs, ports, parameters) must stay
 *   valid for as long as the library is loaded (use static storage).
 * - Tensors cross as DLManagedTensorVersioned (DLPack 1.x), compact row-major, CPU. Ownership
 *   moves to the receiver, who calls `deleter` exactly once when done. Inputs given to
 *   `process` are owned by the plugin; outputs handed to `emit` are owned by the host.
 * - Functions return ENGINE_STATUS_OK or ENGINE_STATUS_ERROR, after writing a message with
 *   err->set(err->ctx, msg, len). They must not throw C++ exceptions or longjmp across the
 *   boundary.
 * - ABI 1.1 (backward compatible: a 1.0 table is the same size, with these slots null):
 *   `configure` is called once after loading, before any `create`, with the host's thread
 *   budget; `next_frame` produces a source's frames (node kinds without inputs need it);
 *   `param_ranges` declares numeric parameter ranges, which `engine check` reports at the
 *   value's file:line:column. The host reads these only from a table whose abi_minor is 1+.
 */
#ifndef ENGINE_PLUGIN_H
#define ENGINE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ENGINE_ABI_MAJOR 1
#define ENGINE_ABI_MINOR 1
#define ENGINE_ENTRY_SYMBOL "engine_plugin_entry"

#define ENGINE_STATUS_OK 0
#define ENGINE_STATUS_END_OF_STREAM 1 /* next_frame only: no more frames, nothing emitted */
#define ENGINE_STATUS_ERROR 2
#define ENGINE_STATUS_PANIC 3

/* ---- DLPack (v1.1 layout) ---- */
typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
enum { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBool = 6 };
enum { kDLCPU = 1 };
typedef struct {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides; /* may be NULL: compact row-major */
  uint64_t byte_offset;
} DLTensor;
typedef struct { uint32_t major; uint32_t minor; } DLPackVersion;
typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;
#define DLPACK_FLAG_BITMASK_READ_ONLY (1UL << 0UL)

/* ---- Kinds, types ---- */
/* Port kinds (see the SDK's PortKind). ANY on an output: same kind as the first input. */
enum EnginePortKind {
  ENGINE_KIND_ANY = 0, ENGINE_KIND_IMAGE = 1, ENGINE_KIND_TENSOR = 2, ENGINE_KIND_FEATURES = 3,
  ENGINE_KIND_INSTANCES = 4, ENGINE_KIND_SEMANTIC = 5, ENGINE_KIND_PANOPTIC = 6,
  ENGINE_KIND_MODEL_IMAGE = 7 /* ABI 1.1: a 1.0 library receives it as ENGINE_KIND_TENSOR */
};
/* Port dtypes: 0 = any, else 1 + index in (f32, f16, u8, i32, i64, bool). */
enum EngineDType {
  ENGINE_DTYPE_ANY = 0, ENGINE_DTYPE_F32 = 1, ENGINE_DTYPE_F16 = 2, ENGINE_DTYPE_U8 = 3,
  ENGINE_DTYPE_I32 = 4, ENGINE_DTYPE_I64 = 5, ENGINE_DTYPE_BOOL = 6
};
enum EngineParamType {
  ENGINE_PARAM_BOOL = 0, ENGINE_PARAM_INT = 1, ENGINE_PARAM_FLOAT = 2, ENGINE_PARAM_STR = 3,
  ENGINE_PARAM_PATH = 4, ENGINE_PARAM_INT_LIST = 5, ENGINE_PARAM_FLOAT_LIST = 6,
  ENGINE_PARAM_STR_LIST = 7
};

typedef struct {
  uint32_t ty; /* EngineParamType */
  uint32_t boolean;
  int64_t int_;
  double float_;
  const char* str;
  const int64_t* ints;
  const double* floats;
  const char* const* strs;
  size_t len;
} EngineParamValue;

typedef struct { const char* name; EngineParamValue value; } EngineParamEntry;

typedef struct {
  const char* name;
  const char* doc;
  uint32_t kind;     /* EnginePortKind */
  uint32_t dtype;    /* EngineDType */
  const char* shape; /* e.g. "N,4", or NULL */
  uint32_t required; /* inputs: 1 if the node cannot run without it */
} EnginePortDesc;

typedef struct {
  const char* name;
  const char* doc;
  uint32_t ty;
  uint32_t has_default; /* 0: the parameter is required */
  EngineParamValue default_value;
} EngineParamDesc;

typedef struct {
  const char* name;
  const char* doc;
  uint32_t n_inputs;
  const EnginePortDesc* inputs;
  uint32_t n_outputs;
  const EnginePortDesc* outputs;
  uint32_t n_params;
  const EngineParamDesc* params;
} EngineNodeKindDesc;

/* ABI 1.1: the allowed range of a numeric parameter (every element, for lists), inclusive. The
 * table's param_ranges array ends with an entry whose param is NULL. */
typedef struct {
  uint32_t kind; /* index into the table's kinds */
  uint32_t reserved;
  const char* param;
  double min;
  double max;
} EngineParamRange;

/* ABI 1.1: what the host tells a library once, in configure. */
typedef struct {
  uint32_t struct_size; /* sizeof(EngineHostConfig) as the host saw it; later fields append */
  uint32_t threads;     /* the thread budget of the library's compute pool */
} EngineHostConfig;

/* In next_frame the host sets stream and index; the source fills in the rest (source points
 * to a string the library owns, valid until next_frame returns). */
typedef struct {
  uint32_t stream;
  uint32_t reserved;
  uint64_t index;
  uint64_t timestamp_ns;
  const char* source;
  uint32_t width;
  uint32_t height;
} EngineFrame;

typedef struct { const char* name; DLManagedTensorVersioned* tensor; } EngineNamedTensor;

typedef struct {
  const char* port;
  uint32_t present; /* 0: absent for this frame (optional input) */
  uint32_t kind;
  uint32_t n_tensors;
  const EngineNamedTensor* tensors; /* owned by the plugin from the call on */
} EnginePortValue;

typedef struct {
  void* ctx;
  void (*set)(void* ctx, const uint8_t* msg, size_t len);
} EngineErrorSink;

typedef struct {
  void* ctx;
  /* The host takes ownership of every tensor, also when it returns an error. */
  int32_t (*emit)(void* ctx, const char* port, uint32_t kind, const EngineNamedTensor* tensors,
                  uint32_t n_tensors);
} EngineOutputSink;

typedef struct {
  /* Stable prefix: read first by the host. */
  uint32_t abi_major;
  uint32_t abi_minor;
  uint32_t struct_size; /* sizeof(EnginePluginTable) */
  uint32_t reserved0;
  const char* plugin_name;
  const char* plugin_version;
  uint32_t n_kinds;
  const EngineNodeKindDesc* kinds;
  int32_t (*create)(uint32_t kind, const EngineParamEntry* params, uint32_t n_params,
                    void** instance, const EngineErrorSink* err);
  int32_t (*process)(void* instance, const EngineFrame* frame, const EnginePortValue* inputs,
                     uint32_t n_inputs, const EngineOutputSink* out, const EngineErrorSink* err);
  int32_t (*finish)(void* instance, const EngineErrorSink* err);
  void (*destroy)(void* instance);
  /* ABI 1.1 (null in 1.0 tables): */
  int32_t (*configure)(const EngineHostConfig* host, const EngineErrorSink* err);
  int32_t (*next_frame)(void* instance, EngineFrame* frame, const EngineOutputSink* out,
                        const EngineErrorSink* err);
  const EngineParamRange* param_ranges; /* may be NULL */
  const void* reserved[1];
} EnginePluginTable;

/* The one symbol a plugin exports. */
const EnginePluginTable* engine_plugin_entry(void);

#ifdef __cplusplus
}
#endif
#endif /* ENGINE_PLUGIN_H */
