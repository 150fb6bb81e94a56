{
  "targets": [
    {
      "target_name": "keelson_uring",
      "sources": ["uring.c", "allocator.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-luring", "-lm"]
    }
  ]
}
