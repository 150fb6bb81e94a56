// Turns a FioJobSpec and a DataPath into the text of a fio job file. The only
// place fio option syntax is written; everything else speaks FioJobSpec.

import path from "node:path";
import { ConformanceError } from "../errors.js";
import type { DataPath } from "../target/target.js";
import type { FioJobSpec } from "./types.js";

const MIB = 1024 * 1024;
/** Size of the file a job gets on a filesystem DataPath when the spec has no `sizeBytes`. */
export const DEFAULT_FILESYSTEM_FILE_BYTES = 256 * MIB;
/** Completion-latency percentiles every run reports: fio's default list plus 99.99. */
export const PERCENTILE_LIST = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99] as const;
/** direct=1 needs sector-aligned offsets and sizes. */
const SECTOR_BYTES = 512;
const MAX_IODEPTH = 1024;
const MAX_NUMJOBS = 64;
/** fio keeps `fsync` in an unsigned int; a flush every million writes is as good as none. */
const MAX_FSYNC_EVERY = 1_000_000;
/** One day: the runner keeps one point per status second, so a run's length is bounded. */
export const MAX_RUNTIME_S = 86_400;
/** A job name is a fio section name and part of a file name: keep it to a safe alphabet. */
const JOB_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Options of {@link fioJobFile}. */
export interface FioJobFileOptions {
  /** File size on a filesystem DataPath when the job has no `sizeBytes`; default {@link DEFAULT_FILESYSTEM_FILE_BYTES}. */
  defaultFileSizeBytes?: number;
}

/** The file a job reads and writes on a filesystem DataPath. */
export function filesystemJobPath(mountPath: string, jobName: string): string {
  return path.join(mountPath, `conformance-${jobName}.dat`);
}

/**
 * The fio job file text for `job` against `dataPath`. Pure; rejects a spec fio
 * would misread with INVALID_ARGUMENT naming the field and its valid range.
 */
export function fioJobFile(dataPath: DataPath, job: FioJobSpec, options: FioJobFileOptions = {}): string {
  validateJob(job);
  const global = ["[global]", ...targetLines(dataPath, job, options), ...runLines(job)];
  return `${[...global, "", `[${job.name}]`, ...workloadLines(job)].join("\n")}\n`;
}

function targetLines(dataPath: DataPath, job: FioJobSpec, options: FioJobFileOptions): string[] {
  const region: string[] = [];
  if (job.offsetBytes !== undefined) region.push(`offset=${job.offsetBytes}`);
  switch (dataPath.kind) {
    case "nbd":
      // fio's nbd engine opens one connection per job (thread), so numjobs=N is N connections.
      checkLine("dataPath.uri", dataPath.uri);
      if (job.sizeBytes !== undefined) region.push(`size=${job.sizeBytes}`);
      return ["ioengine=nbd", `uri=${dataPath.uri}`, ...region];
    case "block":
      checkLine("dataPath.devicePath", dataPath.devicePath);
      if (job.sizeBytes !== undefined) region.push(`size=${job.sizeBytes}`);
      return ["ioengine=libaio", "direct=1", `filename=${escapeFilename(dataPath.devicePath)}`, ...region];
    case "filesystem": {
      checkLine("dataPath.mountPath", dataPath.mountPath);
      const sizeBytes = job.sizeBytes ?? options.defaultFileSizeBytes ?? DEFAULT_FILESYSTEM_FILE_BYTES;
      checkSize("defaultFileSizeBytes", sizeBytes, job.blockSizeBytes);
      const file = escapeFilename(filesystemJobPath(dataPath.mountPath, job.name));
      return ["ioengine=libaio", "direct=1", `filename=${file}`, `size=${sizeBytes}`, ...region];
    }
  }
}

function runLines(job: FioJobSpec): string[] {
  const lines: string[] = [];
  if (job.runtimeS !== undefined) lines.push("time_based=1", `runtime=${job.runtimeS}`);
  if (job.rampS !== undefined && job.rampS > 0) lines.push(`ramp_time=${job.rampS}`);
  // Verify needs the random map so that every block is written, and then checked, exactly once.
  if (!job.verify) lines.push("norandommap=1");
  lines.push(
    "randrepeat=0",
    "group_reporting=1",
    // Jobs as threads of one process: fio forks job processes into their own sessions, and those
    // outlive a SIGKILL of the parent; threads die with it, so cancelling never leaves I/O running.
    "thread=1",
    `percentile_list=${PERCENTILE_LIST.join(":")}`,
  );
  return lines;
}

function workloadLines(job: FioJobSpec): string[] {
  const lines = [`rw=${job.rw}`, `bs=${job.blockSizeBytes}`, `iodepth=${job.iodepth}`];
  if (job.readPercent !== undefined) lines.push(`rwmixread=${job.readPercent}`);
  if (job.numjobs !== undefined && job.numjobs !== 1) lines.push(`numjobs=${job.numjobs}`);
  if (job.rateIops !== undefined) lines.push(`rate_iops=${job.rateIops}`);
  if (job.fsyncEvery !== undefined) lines.push(`fsync=${job.fsyncEvery}`);
  if (job.verify) lines.push("verify=crc32c", "verify_fatal=1", "do_verify=1");
  return lines;
}

/** fio splits `filename` on ':' (a list of files); a literal colon is written `\:`. */
function escapeFilename(file: string): string {
  return file.replaceAll(":", "\\:");
}

function validateJob(job: FioJobSpec): void {
  if (!JOB_NAME.test(job.name)) {
    invalid(`job name ${JSON.stringify(job.name)} is not 1-63 characters of A-Z a-z 0-9 . _ - (starting alphanumeric)`);
  }
  checkInt("blockSizeBytes", job.blockSizeBytes, SECTOR_BYTES, 64 * MIB);
  if (job.blockSizeBytes % SECTOR_BYTES !== 0) invalid(`blockSizeBytes ${job.blockSizeBytes} is not a multiple of 512`);
  checkInt("iodepth", job.iodepth, 1, MAX_IODEPTH);
  if (job.numjobs !== undefined) checkInt("numjobs", job.numjobs, 1, MAX_NUMJOBS);
  if (job.readPercent !== undefined) {
    if (job.rw !== "randrw" && job.rw !== "rw") invalid(`readPercent needs rw "randrw" or "rw", not ${JSON.stringify(job.rw)}`);
    checkInt("readPercent", job.readPercent, 0, 100);
  }
  if (job.sizeBytes !== undefined) checkSize("sizeBytes", job.sizeBytes, job.blockSizeBytes);
  if (job.offsetBytes !== undefined) {
    checkInt("offsetBytes", job.offsetBytes, 0, Number.MAX_SAFE_INTEGER);
    if (job.offsetBytes % SECTOR_BYTES !== 0) invalid(`offsetBytes ${job.offsetBytes} is not a multiple of 512`);
  }
  if (job.runtimeS !== undefined) checkInt("runtimeS", job.runtimeS, 1, MAX_RUNTIME_S);
  if (job.rampS !== undefined) checkInt("rampS", job.rampS, 0, MAX_RUNTIME_S);
  if (job.rateIops !== undefined) checkInt("rateIops", job.rateIops, 1, 100_000_000);
  if (job.fsyncEvery !== undefined) {
    // fio counts writes towards fsync=N: on a job that only reads it would never flush, silently.
    if (job.rw === "read" || job.rw === "randread") {
      invalid(`fsyncEvery needs a writing rw ("write", "randwrite", "randrw" or "rw"), not ${JSON.stringify(job.rw)}`);
    }
    checkInt("fsyncEvery", job.fsyncEvery, 1, MAX_FSYNC_EVERY);
  }
}

function checkSize(field: string, sizeBytes: number, blockSizeBytes: number): void {
  checkInt(field, sizeBytes, blockSizeBytes, Number.MAX_SAFE_INTEGER);
  if (sizeBytes % SECTOR_BYTES !== 0) invalid(`${field} ${sizeBytes} is not a multiple of 512`);
}

function checkInt(field: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    invalid(`${field} ${value} is not an integer in [${min}, ${max}]`);
  }
}

/** A value on a job-file line must not end the line early. */
function checkLine(field: string, value: string): void {
  if (value === "" || /[\r\n]/.test(value)) invalid(`${field} ${JSON.stringify(value)} is empty or spans lines`);
}

function invalid(message: string): never {
  throw new ConformanceError({ code: "INVALID_ARGUMENT", message: `fio job: ${message}` });
}
