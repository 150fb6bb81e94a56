import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError } from "@keelson/sdk";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Pool } from "./pool.js";
import { acceptEveryReservation } from "./reservations.js";

const MIB = 1024 * 1024;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-provisioning-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

async function refusal(op: Promise<unknown>): Promise<unknown> {
  return op.then(
    () => {
      throw new Error("the pool did not refuse");
    },
    (error: unknown) => error,
  );
}

describe("pool over-commit limit", () => {
  it("refuses a create and a resize past 200% of the data capacity with LIMIT_EXCEEDED naming the figures; the limit survives reopen", async () => {
    const file = path.join(dir, "p.img");
    let pool = await Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 32 * MIB });
    const capacity = pool.layout.extentCount * pool.layout.extentSizeBytes;
    expect(pool.provisioning()).toEqual({ provisionedBytes: 0, overcommitPercent: 200, limitBytes: 2 * capacity });
    await pool.createVolume({ name: "a", sizeBytes: capacity });
    await pool.createVolume({ name: "b", sizeBytes: capacity - MIB });
    const create = await refusal(pool.createVolume({ name: "c", sizeBytes: 2 * MIB }));
    expect(isKeelsonError(create, "LIMIT_EXCEEDED")).toBe(true);
    const m = (create as Error).message;
    for (const figure of [`${capacity} bytes`, `${2 * capacity - MIB} bytes`, `${2 * MIB} bytes`, "200%"])
      expect(m).toContain(figure);
    const grow = await refusal(pool.resizeVolume("b", capacity + MIB));
    expect(isKeelsonError(grow, "LIMIT_EXCEEDED") && grow.message).toContain("growing volume b");
    // What is exactly at the limit still fits; an idempotent create asks for nothing more.
    await pool.resizeVolume("b", capacity);
    expect(await pool.createVolume({ name: "a", sizeBytes: capacity })).toBe(pool.getVolume("a"));
    expect(pool.provisioning().provisionedBytes).toBe(2 * capacity);
    await pool.close();

    pool = await Pool.open({ admit: acceptEveryReservation, path: file, overcommitPercent: 300 });
    try {
      // The limit is the engine's setting, not the pool's: a higher one lets the same pool take more.
      expect(pool.provisioning().limitBytes).toBe(3 * capacity);
      await pool.createVolume({ name: "c", sizeBytes: capacity });
      await expect(pool.createVolume({ name: "d", sizeBytes: MIB })).rejects.toMatchObject({ code: "LIMIT_EXCEEDED" });
      // Deleting a volume gives its provisioned size back.
      await pool.deleteVolume("a");
      await pool.createVolume({ name: "d", sizeBytes: capacity });
    } finally {
      await pool.close();
    }
  });

  it("refuses an over-commit limit that is not an integer >= 100 with INVALID_ARGUMENT", async () => {
    for (const overcommitPercent of [99, 150.5, Number.NaN, 0]) {
      const e = await refusal(
        Pool.open({
          admit: acceptEveryReservation,
          path: path.join(dir, "bad.img"),
          createSizeBytes: 32 * MIB,
          overcommitPercent,
        }),
      );
      expect(isKeelsonError(e, "INVALID_ARGUMENT") && e.message).toContain("an integer percent from 100");
    }
  });
});
