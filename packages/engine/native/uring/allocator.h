#ifndef KEELSON_ALLOCATOR_H
#define KEELSON_ALLOCATOR_H
#include <node_api.h>
napi_value tune_allocator(napi_env env, napi_callback_info info);
#endif
