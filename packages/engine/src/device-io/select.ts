import { KeelsonError } from "@keelson/sdk";
import { messageOf } from "../util/errors.js";
import { type DeviceIo, type IoEngine, type IoEngineChoice, isIoEngineChoice } from "./device-io.js";
import { ThreadPoolIo } from "./threadpool-io.js";
import { type UringAddon, type UringLoad, uringAddon } from "./uring-addon.js";
import { URING_CAPACITY, UringIo } from "./uring-io.js";

// One disk I/O engine per process, chosen at start: every pool of the
// process shares it (one ring serves any number of devices).

/** The engine in use and, when it is the thread pool, why. */
export interface IoEngineReport {
  engine: IoEngine;
  /** Why this engine: asked for, or why io_uring could not be used. Empty for io_uring chosen by "auto". */
  note: string;
}

/** This process's engine and the choice it was made for. */
let current: { choice: IoEngineChoice; io: DeviceIo; report: IoEngineReport } | undefined;

/**
 * A new engine as `choice` asks for: UNAVAILABLE when io_uring is asked for
 * and cannot be used here. `load` finds the addon (a test passes its own).
 */
export function chooseIoEngine(
  choice: IoEngineChoice,
  load: () => UringLoad = uringAddon,
): { io: DeviceIo; report: IoEngineReport } {
  if (choice === "threadpool")
    return { io: new ThreadPoolIo(), report: { engine: "threadpool", note: "asked for (threadpool)" } };
  const { addon, why } = load();
  const ring = addon ? openRing(addon) : { io: null, why, cause: undefined };
  if (ring.io) return { io: ring.io, report: { engine: "io_uring", note: choice === "io_uring" ? "asked for (io_uring)" : "" } };
  if (choice === "io_uring")
    throw new KeelsonError({ code: "UNAVAILABLE", message: `--io io_uring: ${ring.why}`, cause: ring.cause });
  return { io: new ThreadPoolIo(), report: { engine: "threadpool", note: ring.why } };
}

/**
 * The full-size ring, or why it cannot be had. The probe's ring of 2 proves
 * little about one of URING_CAPACITY: the kernel may refuse the larger one
 * (its locked-memory limit before Linux 5.12), and auto must then fall back.
 */
function openRing(addon: UringAddon): { io: UringIo; why: null; cause: undefined } | { io: null; why: string; cause: unknown } {
  try {
    return { io: new UringIo(addon), why: null, cause: undefined };
  } catch (error) {
    return {
      io: null,
      why: `io_uring is not available: a ring of ${URING_CAPACITY} requests cannot be opened (${messageOf(error)})`,
      cause: error,
    };
  }
}

/** KEELSON_IO (io_uring, threadpool or auto; unset is auto). INVALID_ARGUMENT for anything else. */
export function ioEngineFromEnv(env: NodeJS.ProcessEnv = process.env): IoEngineChoice {
  const value = env.KEELSON_IO?.trim() || "auto";
  if (!isIoEngineChoice(value))
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `KEELSON_IO=${value}: expected io_uring, threadpool or auto` });
  return value;
}

/**
 * Sets this process's engine (keelsond's --io, at start, before any pool
 * opens). Idempotent: the choice in use again keeps its engine. Another choice
 * replaces the engine and closes the old one, so a pool still open on the old
 * one would fail with EBADF; INVALID_ARGUMENT while the old one has requests
 * in flight; UNAVAILABLE as {@link chooseIoEngine}, the old engine then kept.
 */
export function useIoEngine(choice: IoEngineChoice): IoEngineReport {
  // Asked again (keelsond started twice in one process, or after deviceIo() chose from KEELSON_IO):
  // a new ring would only leave the old one open.
  if (current?.choice === choice) return current.report;
  if (current && current.io.inFlight > 0)
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: "the disk I/O engine is chosen before any pool opens" });
  const next = { choice, ...chooseIoEngine(choice) };
  // Idle (checked above), so its ring closes now instead of staying open for the life of the process.
  current?.io.close();
  current = next;
  return current.report;
}

/** This process's engine: the one {@link useIoEngine} set, else the one KEELSON_IO asks for. */
export function deviceIo(): DeviceIo {
  if (!current) {
    const choice = ioEngineFromEnv();
    current = { choice, ...chooseIoEngine(choice) };
  }
  return current.io;
}

/** What {@link deviceIo} is, and why. */
export function ioEngineReport(): IoEngineReport {
  deviceIo();
  return (current as { report: IoEngineReport }).report;
}
