// Tuning of glibc's malloc for the daemon's traffic. Node reads each socket
// chunk into fresh malloc'd memory (64 KiB), and the garbage collector frees
// those chunks in batches of tens of megabytes. With glibc's defaults a batch
// freed at the top of the heap is given back to the kernel at once, and the
// next chunks fault their pages in again: on a virtual machine a page fault
// costs microseconds, and at a gigabyte a second of writes that was the
// largest cost on the write path. Keeping up to a bounded amount of freed
// memory mapped removes those faults; the bound keeps the daemon's memory
// predictable.
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdbool.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include "allocator.h"

// tuneAllocator(trimBytes, topPadBytes, mmapThresholdBytes): true when glibc took all three.
napi_value tune_allocator(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t v[3];
  napi_value out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3) {
    napi_throw_type_error(env, "KEELSON_URING", "tuneAllocator(trimBytes, topPadBytes, mmapThresholdBytes)");
    return NULL;
  }
  for (int i = 0; i < 3; i++) {
    if (napi_get_value_int64(env, argv[i], &v[i]) != napi_ok || v[i] <= 0 || v[i] > (1LL << 31) - 1) {
      napi_throw_range_error(env, "KEELSON_URING", "tuneAllocator takes three byte counts from 1 to 2^31-1");
      return NULL;
    }
  }
  bool ok = false;
#ifdef __GLIBC__
  ok = mallopt(M_TRIM_THRESHOLD, (int)v[0]) == 1 && mallopt(M_TOP_PAD, (int)v[1]) == 1 &&
       mallopt(M_MMAP_THRESHOLD, (int)v[2]) == 1;
#endif
  napi_get_boolean(env, ok, &out);
  return out;
}
