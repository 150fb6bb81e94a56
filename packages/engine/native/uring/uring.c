// keelson's io_uring engine: reads, writes and fdatasyncs of the pool device
// submitted in batches (one io_uring_enter per event-loop turn) and reaped on
// the event loop. The ring signals an eventfd that libuv polls; each wake-up
// hands every waiting completion to JavaScript in one call, as (token, result)
// pairs in an Int32Array shared with it. JavaScript owns the buffers and keeps
// them alive until their completion arrives. This file allocates per request
// only for O_DIRECT requests whose buffer, position or length is not aligned
// (see `bounce_t`).
#define NAPI_VERSION 8
#include <errno.h>
#include <liburing.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

#include "allocator.h"

typedef struct {
  struct io_uring ring;
  int efd;
  uv_poll_t *poll;
  napi_env env;
  napi_ref callback;
  napi_ref results_ref;
  int32_t *results;
  uint32_t capacity;
  uint32_t in_flight;
  uint32_t prepared;
  int open;
  napi_async_context async_context;
} ring_t;

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, "KEELSON_URING", "N-API call failed: " #call); \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

static napi_value int_value(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

static ring_t *ring_of(napi_env env, napi_value value) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "KEELSON_URING", "not an io_uring handle");
    return NULL;
  }
  ring_t *r = (ring_t *)data;
  if (!r->open) {
    napi_throw_error(env, "KEELSON_URING", "the io_uring is closed");
    return NULL;
  }
  return r;
}

static void hold_loop(ring_t *r);

// An O_DIRECT request whose buffer, position or length is not aligned goes
// through an aligned copy: a write is copied in before it is queued; a read
// covers the aligned blocks around what was asked and copies that part out
// when it completes. Its user_data is the record's address with bit 0 set (a
// plain request's is its token shifted left by one).
typedef struct {
  uint8_t *aligned;
  uint64_t start; // the aligned position
  uint32_t span;  // the aligned length
  uint8_t *dst;   // a read's destination in the caller's buffer; NULL for a write
  uint32_t skip;  // bytes of the aligned read before what was asked
  uint32_t length;
  int32_t token;
} bounce_t;

static uint64_t token_data(int32_t token) { return ((uint64_t)(uint32_t)token) << 1; }

// The token a completion belongs to and its result as the caller sees it; frees a bounce record.
static int32_t complete_one(struct io_uring_cqe *cqe, int32_t *result) {
  uint64_t data = cqe->user_data;
  *result = cqe->res;
  if ((data & 1) == 0) return (int32_t)(uint32_t)(data >> 1);
  bounce_t *b = (bounce_t *)(uintptr_t)(data & ~(uint64_t)1);
  int32_t token = b->token;
  if (b->dst != NULL && cqe->res >= 0) {
    int64_t n = (int64_t)cqe->res - b->skip;
    if (n < 0) n = 0;
    if (n > b->length) n = b->length;
    memcpy(b->dst, b->aligned + b->skip, (size_t)n);
    *result = (int32_t)n;
  }
  free(b->aligned);
  free(b);
  return token;
}

// Moves up to `capacity` waiting completions into the results array as (token, result) pairs; how many.
static uint32_t take_completions(ring_t *r) {
  uint32_t n = 0;
  struct io_uring_cqe *cqe;
  while (n < r->capacity && io_uring_peek_cqe(&r->ring, &cqe) == 0) {
    int32_t result;
    r->results[2 * n] = complete_one(cqe, &result);
    r->results[2 * n + 1] = result;
    io_uring_cqe_seen(&r->ring, cqe);
    n++;
  }
  r->in_flight -= n;
  return n;
}

// Hands every waiting completion to JavaScript, in batches of at most `capacity`.
static void reap(ring_t *r) {
  napi_env env = r->env;
  for (;;) {
    uint32_t n = take_completions(r);
    if (n == 0) return;
    hold_loop(r);
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value fn, recv, arg, ignored;
    napi_get_reference_value(env, r->callback, &fn);
    napi_get_global(env, &recv);  // napi_make_callback needs an object as its receiver
    arg = int_value(env, n);
    napi_status s = napi_make_callback(env, r->async_context, recv, fn, 1, &arg, &ignored);
    if (s == napi_pending_exception) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
    napi_close_handle_scope(env, scope);
    if (!r->open) return;
  }
}

// The poll keeps the process alive only while the kernel holds requests (as a pending fs call does).
static void hold_loop(ring_t *r) {
  if (r->poll == NULL) return;
  if (r->in_flight + r->prepared > 0)
    uv_ref((uv_handle_t *)r->poll);
  else
    uv_unref((uv_handle_t *)r->poll);
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  ring_t *r = (ring_t *)handle->data;
  uint64_t count;
  // The counter is only a wake-up; the completion queue says what finished.
  while (read(r->efd, &count, sizeof count) < 0 && errno == EINTR) {
  }
  reap(r);
}

static void free_poll(uv_handle_t *handle) { free(handle); }

// Stops polling before the eventfd is closed: libuv must drop the fd from
// epoll now, not when a later finalizer runs and the number names another fd.
static void release(ring_t *r) {
  if (!r->open) return;
  r->open = 0;
  uv_poll_stop(r->poll);
  uv_close((uv_handle_t *)r->poll, free_poll);
  r->poll = NULL;
  io_uring_unregister_eventfd(&r->ring);
  close(r->efd);
  io_uring_queue_exit(&r->ring);
  napi_delete_reference(r->env, r->callback);
  napi_delete_reference(r->env, r->results_ref);
  napi_async_destroy(r->env, r->async_context);
}

static void finalize(napi_env env, void *data, void *hint) {
  ring_t *r = (ring_t *)data;
  // Only a ring with nothing in flight can be unreachable: the callback it holds keeps its owner alive.
  if (r->open && r->in_flight == 0) release(r);
  if (!r->open) free(r);
}

// open(capacity, onCompletions(count), results: Int32Array(2 * capacity)) -> handle
static napi_value open_ring(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t capacity;
  if (argc < 3 || napi_get_value_uint32(env, argv[0], &capacity) != napi_ok || capacity == 0 || capacity > 4096) {
    napi_throw_range_error(env, "KEELSON_URING", "capacity must be 1..4096");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, argv[2], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_int32_array ||
      length < 2 * (size_t)capacity) {
    napi_throw_type_error(env, "KEELSON_URING", "results must be an Int32Array of 2 * capacity");
    return NULL;
  }
  ring_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    napi_throw_error(env, "ENOMEM", "cannot allocate an io_uring");
    return NULL;
  }
  struct io_uring_params params;
  memset(&params, 0, sizeof params);
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = 2 * capacity;
  int rc = io_uring_queue_init_params(capacity, &r->ring, &params);
  if (rc < 0) {
    free(r);
    napi_throw_error(env, "ESYSCALL", strerror(-rc));
    return NULL;
  }
  r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->efd < 0 || (rc = io_uring_register_eventfd(&r->ring, r->efd)) < 0) {
    int err = r->efd < 0 ? errno : -rc;
    if (r->efd >= 0) close(r->efd);
    io_uring_queue_exit(&r->ring);
    free(r);
    napi_throw_error(env, "ESYSCALL", strerror(err));
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  r->poll = malloc(sizeof *r->poll);
  if (r->poll == NULL || uv_poll_init(loop, r->poll, r->efd) != 0) {
    free(r->poll);
    io_uring_unregister_eventfd(&r->ring);
    close(r->efd);
    io_uring_queue_exit(&r->ring);
    free(r);
    napi_throw_error(env, "ESYSCALL", "uv_poll_init failed");
    return NULL;
  }
  r->poll->data = r;
  r->env = env;
  r->capacity = capacity;
  r->results = (int32_t *)data;
  r->open = 1;
  CHECK(napi_create_reference(env, argv[1], 1, &r->callback));
  CHECK(napi_create_reference(env, argv[2], 1, &r->results_ref));
  napi_value name;
  CHECK(napi_create_string_utf8(env, "keelson.io_uring", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &r->async_context));
  uv_poll_start(r->poll, UV_READABLE, on_readable);
  hold_loop(r);
  napi_value handle;
  CHECK(napi_create_external(env, r, finalize, NULL, &handle));
  return handle;
}

// A free submission entry, submitting what is prepared when the queue is full; NULL when the ring is at capacity.
static struct io_uring_sqe *next_sqe(ring_t *r) {
  if (r->in_flight + r->prepared >= r->capacity) return NULL;
  struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
  if (sqe == NULL) {
    int n = io_uring_submit(&r->ring);
    if (n > 0) {
      r->in_flight += (uint32_t)n;
      r->prepared -= (uint32_t)n;
    }
    sqe = io_uring_get_sqe(&r->ring);
  }
  return sqe;
}

// The bounce record for an O_DIRECT request at `align` that needs one (else NULL, *rc 0), or NULL and
// *rc -errno. A write must start and end on a block (the caller writes whole blocks); only its buffer
// may be unaligned.
static bounce_t *bounce_for(uint8_t *buf, uint32_t length, int64_t position, uint32_t align, int is_write, int *rc) {
  *rc = 0;
  uint64_t mask = (uint64_t)align - 1;
  int buf_ok = ((uintptr_t)buf & mask) == 0;
  int range_ok = ((uint64_t)position & mask) == 0 && ((uint64_t)length & mask) == 0;
  if (buf_ok && range_ok) return NULL;
  if (is_write && !range_ok) {
    *rc = -EINVAL;
    return NULL;
  }
  uint64_t start = (uint64_t)position & ~mask;
  uint64_t end = ((uint64_t)position + length + mask) & ~mask;
  bounce_t *b = malloc(sizeof *b);
  void *aligned = NULL;
  if (b == NULL || end - start > UINT32_MAX || posix_memalign(&aligned, align, (size_t)(end - start)) != 0) {
    free(b);
    *rc = -ENOMEM;
    return NULL;
  }
  b->aligned = aligned;
  b->start = start;
  b->span = (uint32_t)(end - start);
  b->skip = (uint32_t)((uint64_t)position - start);
  b->length = length;
  b->dst = is_write ? NULL : buf;
  if (is_write) memcpy(aligned, buf, length);
  return b;
}

// read|write(handle, fd, buffer, bufferOffset, length, position, token[, align]) -> 0, or -EBUSY when the
// ring is full, -EINVAL for an O_DIRECT write off the block grid, -ENOMEM. `align` (a power of two, 0 or
// absent: none) says the fd is O_DIRECT: what is not aligned to it goes through a copy (bounce_t).
static napi_value queue_rw(napi_env env, napi_callback_info info, int is_write) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ring_t *r = argc == 7 || argc == 8 ? ring_of(env, argv[0]) : NULL;
  if (r == NULL) return NULL;
  int32_t fd, token;
  uint32_t offset, length, align = 0;
  int64_t position;
  napi_typedarray_type type;
  size_t size;
  void *data;
  if (napi_get_value_int32(env, argv[1], &fd) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &type, &size, &data, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      napi_get_value_uint32(env, argv[3], &offset) != napi_ok || napi_get_value_uint32(env, argv[4], &length) != napi_ok ||
      napi_get_value_int64(env, argv[5], &position) != napi_ok || napi_get_value_int32(env, argv[6], &token) != napi_ok ||
      (argc == 8 && napi_get_value_uint32(env, argv[7], &align) != napi_ok) || (align & (align - 1)) != 0 ||
      (size_t)offset + length > size || position < 0) {
    napi_throw_type_error(env, "KEELSON_URING", "bad read/write arguments");
    return NULL;
  }
  uint8_t *buf = (uint8_t *)data + offset;
  bounce_t *b = NULL;
  if (align > 1) {
    int rc;
    b = bounce_for(buf, length, position, align, is_write, &rc);
    if (rc < 0) return int_value(env, rc);
  }
  struct io_uring_sqe *sqe = next_sqe(r);
  if (sqe == NULL) {
    if (b != NULL) {
      free(b->aligned);
      free(b);
    }
    return int_value(env, -EBUSY);
  }
  if (b != NULL) {
    b->token = token;
    if (is_write)
      io_uring_prep_write(sqe, fd, b->aligned, b->span, b->start);
    else
      io_uring_prep_read(sqe, fd, b->aligned, b->span, b->start);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)b | 1);
  } else {
    if (is_write)
      io_uring_prep_write(sqe, fd, buf, length, (uint64_t)position);
    else
      io_uring_prep_read(sqe, fd, buf, length, (uint64_t)position);
    io_uring_sqe_set_data64(sqe, token_data(token));
  }
  r->prepared++;
  hold_loop(r);
  return int_value(env, 0);
}

static napi_value ring_read(napi_env env, napi_callback_info info) { return queue_rw(env, info, 0); }
static napi_value ring_write(napi_env env, napi_callback_info info) { return queue_rw(env, info, 1); }

// fdatasync(handle, fd, token) -> 0, or -EBUSY
static napi_value ring_fdatasync(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ring_t *r = argc == 3 ? ring_of(env, argv[0]) : NULL;
  if (r == NULL) return NULL;
  int32_t fd, token;
  if (napi_get_value_int32(env, argv[1], &fd) != napi_ok || napi_get_value_int32(env, argv[2], &token) != napi_ok) {
    napi_throw_type_error(env, "KEELSON_URING", "bad fdatasync arguments");
    return NULL;
  }
  struct io_uring_sqe *sqe = next_sqe(r);
  if (sqe == NULL) return int_value(env, -EBUSY);
  io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(sqe, token_data(token));
  r->prepared++;
  hold_loop(r);
  return int_value(env, 0);
}

// submit(handle) -> requests handed to the kernel, or -errno
static napi_value ring_submit(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ring_t *r = argc == 1 ? ring_of(env, argv[0]) : NULL;
  if (r == NULL) return NULL;
  if (r->prepared == 0) return int_value(env, 0);
  int n = io_uring_submit(&r->ring);
  if (n > 0) {
    r->in_flight += (uint32_t)n;
    r->prepared -= (uint32_t)n;
  }
  hold_loop(r);
  return int_value(env, n);
}

// reapNow(handle) -> n: the completions already in the queue, moved into the results array at once
// instead of on the eventfd's wake-up (a read the page cache answered completes inside the submit, and
// waiting for the loop to come round again costs it a wake-up). The eventfd is drained first, so a
// completion posted after that still wakes the loop; n == capacity means more may wait.
static napi_value ring_reap_now(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ring_t *r = argc == 1 ? ring_of(env, argv[0]) : NULL;
  if (r == NULL) return NULL;
  if (!r->open || r->in_flight == 0) return int_value(env, 0);
  uint64_t count;
  while (read(r->efd, &count, sizeof count) < 0 && errno == EINTR) {
  }
  uint32_t n = take_completions(r);
  hold_loop(r);
  return int_value(env, n);
}

// close(handle) -> 0, or -EBUSY while requests are in flight or prepared
static napi_value ring_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data = NULL;
  if (argc != 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "KEELSON_URING", "not an io_uring handle");
    return NULL;
  }
  ring_t *r = (ring_t *)data;
  if (!r->open) return int_value(env, 0);
  if (r->in_flight > 0 || r->prepared > 0) return int_value(env, -EBUSY);
  release(r);
  return int_value(env, 0);
}

// missingOps(handle) -> the names of the ops keelson uses that this kernel's
// io_uring lacks ([] when it has them all). A kernel that opens rings but
// lacks one fails each such request with EINVAL, so the engine checks first.
static napi_value ring_missing_ops(napi_env env, napi_callback_info info) {
  static const struct {
    int op;
    const char *name;
  } needed[] = {{IORING_OP_READ, "READ"}, {IORING_OP_WRITE, "WRITE"}, {IORING_OP_FSYNC, "FSYNC"}};
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ring_t *r = argc == 1 ? ring_of(env, argv[0]) : NULL;
  if (r == NULL) return NULL;
  // IORING_REGISTER_PROBE came with IORING_OP_READ and _WRITE (Linux 5.6): a kernel that cannot answer lacks them too.
  struct io_uring_probe *probe = io_uring_get_probe_ring(&r->ring);
  if (probe == NULL) {
    napi_throw_error(env, "KEELSON_URING", "the kernel cannot list its io_uring ops (IORING_REGISTER_PROBE needs Linux 5.6 or later)");
    return NULL;
  }
  const char *missing[sizeof needed / sizeof needed[0]];
  uint32_t n = 0;
  for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++)
    if (!io_uring_opcode_supported(probe, needed[i].op)) missing[n++] = needed[i].name;
  io_uring_free_probe(probe);
  napi_value out, name;
  CHECK(napi_create_array_with_length(env, n, &out));
  for (uint32_t i = 0; i < n; i++) {
    CHECK(napi_create_string_utf8(env, missing[i], NAPI_AUTO_LENGTH, &name));
    CHECK(napi_set_element(env, out, i, name));
  }
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, open_ring, NULL, NULL, NULL, napi_default, NULL},
      {"read", NULL, ring_read, NULL, NULL, NULL, napi_default, NULL},
      {"write", NULL, ring_write, NULL, NULL, NULL, napi_default, NULL},
      {"fdatasync", NULL, ring_fdatasync, NULL, NULL, NULL, napi_default, NULL},
      {"submit", NULL, ring_submit, NULL, NULL, NULL, napi_default, NULL},
      {"reapNow", NULL, ring_reap_now, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, ring_close, NULL, NULL, NULL, napi_default, NULL},
      {"missingOps", NULL, ring_missing_ops, NULL, NULL, NULL, napi_default, NULL},
      {"tuneAllocator", NULL, tune_allocator, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
