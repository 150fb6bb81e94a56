// A failure below the NBD layer that is not a KeelsonError (a bug: a
// TypeError, a thrown string, a synchronous throw) must reach the client as
// an error, never as errno 0, which the client reads as success.
import { KeelsonError } from "@keelson/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ExportCallback, ExportCatalog, NbdExport } from "../src/nbd/export.js";
import { NbdServer } from "../src/nbd/server.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

const EIO = 5;
const ENOSPC = 28;
const SIZE = 1024 * 1024;

type Failure = (cb: ExportCallback) => void;

/** How each export named here fails every operation. */
const FAILURES: Record<string, Failure> = {
  "type-error": (cb) => cb(new TypeError("Cannot read properties of undefined (reading 'write')") as unknown as KeelsonError),
  "thrown-string": (cb) => cb("disk said no" as unknown as KeelsonError),
  "sync-throw": () => {
    throw new RangeError("offset out of bounds");
  },
  "typed-no-space": (cb) => cb(new KeelsonError({ code: "NO_SPACE", message: "pool is full" })),
};

function failingExport(name: string, fail: Failure): NbdExport {
  return {
    name,
    description: "fails every request",
    sizeBytes: SIZE,
    readOnly: false,
    read: (_o, _l, _b, _at, cb) => fail(cb),
    write: (_o, _d, _f, cb) => fail(cb),
    zero: (_o, _l, _opts, cb) => fail(cb),
    flush: (cb) => fail(cb),
    close: () => undefined,
  };
}

const catalog: ExportCatalog = {
  list: () => Object.keys(FAILURES).map((name) => ({ name, description: "" })),
  open: (name) => (FAILURES[name] ? failingExport(name, FAILURES[name]) : null),
  describe: (name) => (FAILURES[name] ? { sizeBytes: SIZE, readOnly: false, description: "" } : null),
};

let server: NbdServer;

beforeAll(async () => {
  server = new NbdServer(catalog);
  await server.listen({ tcp: "127.0.0.1:0" });
});

afterAll(async () => {
  await server.close();
});

describe("a failed request is never acknowledged as a success", () => {
  for (const name of ["type-error", "thrown-string", "sync-throw"]) {
    it(`${name}: every command is answered EIO and the connection goes on`, async () => {
      const c = await NbdTestClient.open(server.tcpAddress, name);
      try {
        expect((await c.write(0, Buffer.alloc(4096, 7))).error).toBe(EIO);
        expect((await c.write(8192, Buffer.alloc(4096, 7), true)).error).toBe(EIO);
        expect((await c.read(0, 4096)).error).toBe(EIO);
        expect((await c.trim(0, 4096)).error).toBe(EIO);
        expect((await c.writeZeroes(0, 4096)).error).toBe(EIO);
        expect((await c.flush()).error).toBe(EIO);
        // Many in flight at once: each gets its own error reply, none is lost or doubled.
        const all = await Promise.all(Array.from({ length: 32 }, (_, i) => c.write(i * 4096, Buffer.alloc(4096, i))));
        expect(all.map((r) => r.error)).toEqual(Array(32).fill(EIO));
      } finally {
        c.close();
      }
    });
  }

  it("a typed error keeps its errno (NO_SPACE is ENOSPC)", async () => {
    const c = await NbdTestClient.open(server.tcpAddress, "typed-no-space");
    try {
      expect((await c.write(0, Buffer.alloc(4096, 7))).error).toBe(ENOSPC);
    } finally {
      c.close();
    }
  });
});
