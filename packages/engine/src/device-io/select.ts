import { KeelsonError } from "@keelson/sdk";
import { type DeviceIo, type IoEngine, type IoEngineChoice, isIoEngineChoice } from "./device-io.js";
import { ThreadPoolIo } from "./threadpool-io.js";
import { uringAddon } from "./uring-addon.js";
import { UringIo } from "./uring-io.js";

// One disk I/O engine per process, chosen at start: every pool of the
// process shares it (one ring serves any number of devices).

/** The engine in use and, when it is the thread pool, why. */
export interface IoEngineReport {
  engine: IoEngine;
  /** Why this engine: asked for, or why io_uring could not be used. Empty for io_uring chosen by "auto". */
  note: string;
}

let current: { io: DeviceIo; report: IoEngineReport } | undefined;

/** The engine `choice` asks for: UNAVAILABLE when io_uring is asked for and cannot be used here. */
export function chooseIoEngine(choice: IoEngineChoice): { io: DeviceIo; report: IoEngineReport } {
  if (choice === "threadpool")
    return { io: new ThreadPoolIo(), report: { engine: "threadpool", note: "asked for (threadpool)" } };
  const { addon, why } = uringAddon();
  if (addon)
    return { io: new UringIo(addon), report: { engine: "io_uring", note: choice === "io_uring" ? "asked for (io_uring)" : "" } };
  if (choice === "io_uring") throw new KeelsonError({ code: "UNAVAILABLE", message: `--io io_uring: ${why}` });
  return { io: new ThreadPoolIo(), report: { engine: "threadpool", note: why } };
}

/** KEELSON_IO (io_uring, threadpool or auto; unset is auto). INVALID_ARGUMENT for anything else. */
export function ioEngineFromEnv(env: NodeJS.ProcessEnv = process.env): IoEngineChoice {
  const value = env.KEELSON_IO?.trim() || "auto";
  if (!isIoEngineChoice(value))
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `KEELSON_IO=${value}: expected io_uring, threadpool or auto` });
  return value;
}

/** Sets this process's engine (keelsond's --io, at start, before any pool opens). */
export function useIoEngine(choice: IoEngineChoice): IoEngineReport {
  if (current && current.io.inFlight > 0)
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: "the disk I/O engine is chosen before any pool opens" });
  current = chooseIoEngine(choice);
  return current.report;
}

/** This process's engine: the one {@link useIoEngine} set, else the one KEELSON_IO asks for. */
export function deviceIo(): DeviceIo {
  current ??= chooseIoEngine(ioEngineFromEnv());
  return current.io;
}

/** What {@link deviceIo} is, and why. */
export function ioEngineReport(): IoEngineReport {
  deviceIo();
  return (current as { report: IoEngineReport }).report;
}
