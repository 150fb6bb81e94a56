// Tuning of glibc's malloc for the daemon's traffic. Node reads each socket
// chunk into fresh malloc'd memory (64 KiB), and the garbage collector frees
// those chunks in batches of tens of megabytes. With glibc's defaults a batch
// freed at the top of the heap is given back to the kernel at once, and the
// next chunks fault their pages in again: on a virtual machine a page fault
// costs microseconds, and at a gigabyte a second of writes that was the
// largest cost on the write path. Raising the trim threshold keeps up to that
// much free memory at the top of the heap mapped; free memory inside the heap
// is reused as glibc always does.
#define NAPI_VERSION 8
#include <stdlib.h>  // defines __GLIBC__ where the C library is glibc
#include <math.h>
#include <stdint.h>
#include <node_api.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include "allocator.h"

// tuneAllocator(trimBytes, topPadBytes, mmapThresholdBytes) -> the names of the settings glibc
// refused (empty when all took), or null where the C library is not glibc.
napi_value tune_allocator(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int v[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3) {
    napi_throw_type_error(env, "KEELSON_URING", "tuneAllocator(trimBytes, topPadBytes, mmapThresholdBytes)");
    return NULL;
  }
  for (int i = 0; i < 3; i++) {
    double d;
    if (napi_get_value_double(env, argv[i], &d) != napi_ok) {
      napi_throw_type_error(env, "KEELSON_URING", "tuneAllocator takes three numbers");
      return NULL;
    }
    if (!(d >= 1 && d <= 2147483647.0) || floor(d) != d) {
      napi_throw_range_error(env, "KEELSON_URING", "tuneAllocator takes three byte counts from 1 to 2^31-1");
      return NULL;
    }
    v[i] = (int)d;
  }
  napi_value out;
#ifdef __GLIBC__
  static const struct {
    int param;
    const char *name;
  } settings[] = {{M_TRIM_THRESHOLD, "M_TRIM_THRESHOLD"}, {M_TOP_PAD, "M_TOP_PAD"}, {M_MMAP_THRESHOLD, "M_MMAP_THRESHOLD"}};
  if (napi_create_array(env, &out) != napi_ok) return NULL;
  uint32_t refused = 0;
  // Each is tried even when one before it was refused: the report names exactly those that did not take.
  for (int i = 0; i < 3; i++) {
    if (mallopt(settings[i].param, v[i]) == 1) continue;
    napi_value name;
    if (napi_create_string_utf8(env, settings[i].name, NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_set_element(env, out, refused++, name) != napi_ok)
      return NULL;
  }
#else
  if (napi_get_null(env, &out) != napi_ok) return NULL;
#endif
  return out;
}
