#!/usr/bin/env node
import os from "node:os";

// libuv's thread pool runs every pool read, write and fsync, so it is sized
// before anything touches the pool. Measured on 2 cores (4k randread qd32):
// 4 threads 63k IOPS, 8 threads 60k, 32 threads 53k (the threads contend), so
// two per core, at least libuv's default of 4.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, 2 * os.availableParallelism()));
await import("./keelsond-main.js");
