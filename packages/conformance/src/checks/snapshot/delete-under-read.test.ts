import { KeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { ConformanceError } from "../../errors.js";
import { isDependantRefusal } from "./delete-under-read.js";

/** The error the local target throws for a keelson failure (see target/keelson-errors.ts). */
function fromKeelson(code: ConstructorParameters<typeof KeelsonError>[0]["code"], message: string): ConformanceError {
  const cause = new KeelsonError({ code, message });
  return new ConformanceError({ code: "TARGET_FAILED", message: `delete snapshot v@s: ${code}: ${message}`, cause });
}

describe("isDependantRefusal", () => {
  it("keelson's refusal of a snapshot in use (VOLUME_IN_USE) is a refusal", () => {
    expect(isDependantRefusal(fromKeelson("VOLUME_IN_USE", "snapshot s has 1 open connection(s); disconnect them first"))).toBe(
      true,
    );
  });

  it("a refusal that names the snapshot's dependants is a refusal, whatever the target", () => {
    const error = new ConformanceError({
      code: "TARGET_FAILED",
      message: "DeleteSnapshot: FAILED_PRECONDITION: snapshot snap-1 has dependent clones",
    });
    expect(isDependantRefusal(error)).toBe(true);
  });

  it("a daemon that crashed, a call that timed out, a snapshot not found, a cancel: failures, not refusals", () => {
    const failures = [
      fromKeelson("UNAVAILABLE", "connect ECONNREFUSED /run/keelson/node1.sock"),
      fromKeelson("DEADLINE_EXCEEDED", "DeleteSnapshot did not answer within 60000 ms"),
      new ConformanceError({ code: "NOT_FOUND", message: "delete snapshot v@s: SNAPSHOT_NOT_FOUND: no snapshot s of v" }),
      new ConformanceError({ code: "TARGET_FAILED", message: "delete snapshot v@s: socket hang up" }),
      new ConformanceError({ code: "CANCELLED", message: "the run was interrupted" }),
      new ConformanceError({ code: "INTERNAL", message: "in use: a bug in the suite" }),
      new Error("snapshot in use"),
    ];
    for (const error of failures) expect(isDependantRefusal(error), (error as Error).message).toBe(false);
  });
});
