/*
 * A plugin written in C: `score_scale` multiplies instance scores by `factor`.
 *
 *   cc -shared -fPIC -O2 -I plugins/sdk/include plugins/examples/c_plugin/score_scale.c \
 *      -o target/libscore_scale.so
 *
 * It passes boxes, classes and any other tensor through without copying (ownership of input
 * tensors moves to the plugin, which hands them on to the host), and allocates a new `scores`
 * tensor with its own deleter.
 *
 * Build with -DSCORE_SCALE_ABI_MAJOR=N or -DSCORE_SCALE_ABI_MINOR=N to produce a library
 * that claims another ABI version (the engine's tests use it to check that such a library is
 * refused). The table is written with designated initializers, so this file builds against
 * the 1.1 header and against a 1.0 header alike (the tests build it with both).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_plugin.h"

#ifndef SCORE_SCALE_ABI_MAJOR
#define SCORE_SCALE_ABI_MAJOR ENGINE_ABI_MAJOR
#endif
#ifndef SCORE_SCALE_PLUGIN_NAME
#define SCORE_SCALE_PLUGIN_NAME "score_scale_c"
#endif
#ifndef SCORE_SCALE_ABI_MINOR
#define SCORE_SCALE_ABI_MINOR ENGINE_ABI_MINOR
#endif

_Static_assert(sizeof(EnginePluginTable) == 112, "EnginePluginTable layout changed");
_Static_assert(sizeof(DLManagedTensorVersioned) == 80, "DLManagedTensorVersioned layout changed");

static const EnginePortDesc inputs[] = {
    {"instances", "detections", ENGINE_KIND_INSTANCES, ENGINE_DTYPE_F32, "N,4", 1},
};
static const EnginePortDesc outputs[] = {
    {"instances", "detections with scaled scores", ENGINE_KIND_INSTANCES, ENGINE_DTYPE_F32, "N,4", 1},
};
static const EngineParamDesc params[] = {
    {"factor", "multiplier applied to every score", ENGINE_PARAM_FLOAT, 1,
     {ENGINE_PARAM_FLOAT, 0, 0, 1.0, NULL, NULL, NULL, NULL, 0}},
    {"drop_last_score", "emit one score fewer than boxes (shows how the engine reports mis-shaped output)",
     ENGINE_PARAM_BOOL, 1, {ENGINE_PARAM_BOOL, 0, 0, 0.0, NULL, NULL, NULL, NULL, 0}},
};
static const EngineNodeKindDesc kinds[] = {
    {"score_scale", "Multiplies instance scores by a factor (example plugin written in C)", 1, inputs, 1,
     outputs, 2, params},
};

typedef struct { double factor; int drop_last_score; } ScoreScale;

static void fail(const EngineErrorSink* err, const char* msg) {
  if (err) err->set(err->ctx, (const uint8_t*)msg, strlen(msg));
}

static int32_t create(uint32_t kind, const EngineParamEntry* p, uint32_t n, void** instance,
                      const EngineErrorSink* err) {
  if (kind != 0) { fail(err, "unknown node kind"); return ENGINE_STATUS_ERROR; }
  ScoreScale* s = malloc(sizeof *s);
  if (!s) { fail(err, "out of memory"); return ENGINE_STATUS_ERROR; }
  s->factor = 1.0;
  s->drop_last_score = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (strcmp(p[i].name, "factor") == 0) s->factor = p[i].value.float_;
    if (strcmp(p[i].name, "drop_last_score") == 0) s->drop_last_score = p[i].value.boolean != 0;
  }
  if (s->factor < 0) {
    free(s);
    fail(err, "parameter \"factor\" must be >= 0");
    return ENGINE_STATUS_ERROR;
  }
  *instance = s;
  return ENGINE_STATUS_OK;
}

typedef struct { int64_t shape[1]; int64_t strides[1]; float data[]; } Owned;

static void delete_owned(DLManagedTensorVersioned* t) {
  free(t->manager_ctx);
  free(t);
}

static void release(const EnginePortValue* v) {
  for (uint32_t i = 0; i < v->n_tensors; i++)
    if (v->tensors[i].tensor && v->tensors[i].tensor->deleter) v->tensors[i].tensor->deleter(v->tensors[i].tensor);
}

static int32_t process(void* instance, const EngineFrame* frame, const EnginePortValue* in, uint32_t n_in,
                       const EngineOutputSink* out, const EngineErrorSink* err) {
  (void)frame;
  ScoreScale* s = instance;
  if (n_in != 1 || !in[0].present) { fail(err, "instances input missing"); return ENGINE_STATUS_ERROR; }
  const EnginePortValue* v = &in[0];
  EngineNamedTensor named[16];
  if (v->n_tensors > 16) { release(v); fail(err, "too many tensors"); return ENGINE_STATUS_ERROR; }
  int found = 0;
  for (uint32_t i = 0; i < v->n_tensors; i++) {
    named[i] = v->tensors[i];
    if (strcmp(v->tensors[i].name, "scores") != 0) continue;
    DLTensor* t = &v->tensors[i].tensor->dl_tensor;
    if (t->ndim != 1 || t->dtype.code != kDLFloat || t->dtype.bits != 32) {
      release(v);
      fail(err, "scores must be f32 [N]");
      return ENGINE_STATUS_ERROR;
    }
    int64_t count = t->shape[0];
    Owned* o = malloc(sizeof(Owned) + (size_t)count * sizeof(float));
    DLManagedTensorVersioned* m = malloc(sizeof *m);
    if (!o || !m) { free(o); free(m); release(v); fail(err, "out of memory"); return ENGINE_STATUS_ERROR; }
    const float* src = (const float*)((const char*)t->data + t->byte_offset);
    for (int64_t k = 0; k < count; k++) o->data[k] = (float)(src[k] * s->factor);
    o->shape[0] = (s->drop_last_score && count > 0) ? count - 1 : count;
    o->strides[0] = 1;
    m->version.major = 1;
    m->version.minor = 1;
    m->manager_ctx = o;
    m->deleter = delete_owned;
    m->flags = 0;
    m->dl_tensor.data = o->data;
    m->dl_tensor.device.device_type = kDLCPU;
    m->dl_tensor.device.device_id = 0;
    m->dl_tensor.ndim = 1;
    m->dl_tensor.dtype = t->dtype;
    m->dl_tensor.shape = o->shape;
    m->dl_tensor.strides = o->strides;
    m->dl_tensor.byte_offset = 0;
    /* The input scores tensor is ours: release it, and emit the new one instead. */
    v->tensors[i].tensor->deleter(v->tensors[i].tensor);
    named[i].tensor = m;
    found = 1;
  }
  if (!found) { release(v); fail(err, "instances have no scores"); return ENGINE_STATUS_ERROR; }
  /* Ownership of every tensor in `named` moves to the host. */
  if (out->emit(out->ctx, "instances", ENGINE_KIND_INSTANCES, named, v->n_tensors) != ENGINE_STATUS_OK) {
    fail(err, "the engine refused the output");
    return ENGINE_STATUS_ERROR;
  }
  return ENGINE_STATUS_OK;
}

static int32_t finish(void* instance, const EngineErrorSink* err) {
  (void)instance;
  (void)err;
  return ENGINE_STATUS_OK;
}

static void destroy(void* instance) { free(instance); }

/* Fields not named here (ABI 1.1's configure and next_frame, the reserved slots) are null. */
static const EnginePluginTable table = {
    .abi_major = SCORE_SCALE_ABI_MAJOR,
    .abi_minor = SCORE_SCALE_ABI_MINOR,
    .struct_size = sizeof(EnginePluginTable),
    .plugin_name = SCORE_SCALE_PLUGIN_NAME,
    .plugin_version = "1.0.0",
    .n_kinds = 1,
    .kinds = kinds,
    .create = create,
    .process = process,
    .finish = finish,
    .destroy = destroy,
};

const EnginePluginTable* engine_plugin_entry(void) { return &table; }
