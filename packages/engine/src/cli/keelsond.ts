#!/usr/bin/env node
// libuv's thread pool runs every pool read, write and fsync; its default of 4
// threads caps a qd32 workload, so size it before anything touches the pool.
process.env.UV_THREADPOOL_SIZE ??= "32";
await import("./keelsond-main.js");
