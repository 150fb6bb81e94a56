// The bench profiles: the fio workloads bench/ runs against every target and
// the latency-percentile checks reuse. The single source of them (they were
// bench/jobs/*.fio).

import { ConformanceError } from "../errors.js";
import type { FioJobSpec } from "./types.js";

const KIB = 1024;
const MIB = 1024 * KIB;

/** A bench workload: a job without a length or region, plus what it is for. */
export interface FioProfile
  extends Readonly<Pick<FioJobSpec, "name" | "rw" | "blockSizeBytes" | "iodepth" | "readPercent" | "fsyncEvery">> {
  /** One line on what the profile measures. */
  readonly description: string;
}

/** The bench profiles, in the order bench runs and prints them. */
export const BENCH_PROFILES: readonly FioProfile[] = [
  {
    name: "randread-4k-qd1",
    rw: "randread",
    blockSizeBytes: 4 * KIB,
    iodepth: 1,
    description: "4 KiB random reads, one at a time: per-request latency.",
  },
  {
    name: "randread-4k-qd32",
    rw: "randread",
    blockSizeBytes: 4 * KIB,
    iodepth: 32,
    description: "4 KiB random reads, 32 in flight: request rate.",
  },
  {
    name: "randwrite-4k-qd1",
    rw: "randwrite",
    blockSizeBytes: 4 * KIB,
    iodepth: 1,
    description: "4 KiB random writes, one at a time: per-request latency.",
  },
  {
    name: "randwrite-4k-qd32",
    rw: "randwrite",
    blockSizeBytes: 4 * KIB,
    iodepth: 32,
    description: "4 KiB random writes, 32 in flight: request rate.",
  },
  {
    name: "read-1m-qd8",
    rw: "read",
    blockSizeBytes: MIB,
    iodepth: 8,
    description: "1 MiB sequential reads, 8 in flight: bandwidth.",
  },
  {
    name: "write-1m-qd8",
    rw: "write",
    blockSizeBytes: MIB,
    iodepth: 8,
    description: "1 MiB sequential writes, 8 in flight: bandwidth.",
  },
  {
    name: "mixed-70-30-4k-qd1",
    rw: "randrw",
    readPercent: 70,
    blockSizeBytes: 4 * KIB,
    iodepth: 1,
    description: "4 KiB random I/O, 70% reads and 30% writes, one at a time: latency of a mixed load.",
  },
];

/** The profile named `name`; INVALID_ARGUMENT listing the names when there is none. */
export function benchProfile(name: string): FioProfile {
  const profile = BENCH_PROFILES.find((p) => p.name === name);
  if (profile === undefined) {
    const names = BENCH_PROFILES.map((p) => p.name).join(", ");
    throw new ConformanceError({
      code: "INVALID_ARGUMENT",
      message: `no bench profile ${JSON.stringify(name)}; valid: ${names}`,
    });
  }
  return profile;
}

/** How long and where a profile runs. */
export interface ProfileRun {
  /** Time-based run of this many seconds; without it the profile runs its region once. */
  runtimeS?: number;
  /** Seconds excluded from the figures at the start. */
  rampS?: number;
  /** Region of the volume (or file size on a filesystem). */
  sizeBytes?: number;
  offsetBytes?: number;
  numjobs?: number;
  rateIops?: number;
}

/** A runnable job: `profile` with a length and region. Fields of `run` left out stay fio's defaults. */
export function profileJob(profile: FioProfile, run: ProfileRun = {}): FioJobSpec {
  const job: FioJobSpec = {
    name: profile.name,
    rw: profile.rw,
    blockSizeBytes: profile.blockSizeBytes,
    iodepth: profile.iodepth,
  };
  if (profile.readPercent !== undefined) job.readPercent = profile.readPercent;
  if (profile.fsyncEvery !== undefined) job.fsyncEvery = profile.fsyncEvery;
  for (const key of ["runtimeS", "rampS", "sizeBytes", "offsetBytes", "numjobs", "rateIops"] as const) {
    const value = run[key];
    if (value !== undefined) job[key] = value;
  }
  return job;
}
