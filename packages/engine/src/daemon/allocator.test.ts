import { describe, expect, it } from "vitest";
import { nativeAddon } from "../device-io/uring-addon.js";
import { tuneAllocator } from "./allocator.js";

describe("malloc tuning", () => {
  it("the addon tunes glibc's malloc, and refuses byte counts that are not positive 31-bit integers", () => {
    const { addon, why } = nativeAddon();
    if (!addon) {
      // The addon must be there wherever it is required to build (CI); elsewhere its absence is said, not hidden.
      if (process.env.CI || process.env.KEELSON_REQUIRE_IO_URING === "1") throw new Error(`native addon unavailable: ${why}`);
      console.error(`!!!!!!!! malloc tuning not tested: ${why} !!!!!!!!`);
      expect(tuneAllocator()).toBe(why);
      return;
    }
    expect(tuneAllocator()).toBeNull();
    // glibc takes each setting it is given: none is named as refused.
    expect(addon.tuneAllocator(64 * 1024 * 1024, 1024 * 1024, 1024 * 1024)).toEqual([]);
    expect(tuneAllocator()).toBeNull();
    expect(() => addon.tuneAllocator(0, 1, 1)).toThrow(RangeError);
    expect(() => addon.tuneAllocator(1.5, 1, 1)).toThrow(RangeError);
    expect(() => addon.tuneAllocator(2 ** 31, 1, 1)).toThrow(RangeError);
    const loose = addon.tuneAllocator as (...a: unknown[]) => unknown;
    expect(() => loose(1, 1)).toThrow(TypeError);
    expect(() => loose("1", 1, 1)).toThrow(TypeError);
  });
});
