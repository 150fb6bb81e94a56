// A complete, realistic report with every optional field set. Tests of the
// schema and of each rendering use it; it also shows what a run produces.

import type { CheckResult, LatencyCurve, Report, TimeSeries } from "./types.js";

/** fio's default completion-latency percentiles, as the latency checks record them. */
const FIO_PERCENTILES = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99] as const;

/** A curve that rises gently to the median and steeply in the tail, like a replicated write path. */
function curve(profile: string, replicas: number, medianUs: number, iops: number, blockKiB: number): LatencyCurve {
  const tailFactor = 1 + replicas * 0.35;
  return {
    profile,
    replicas,
    iops,
    mibPerSec: Math.round(((iops * blockKiB) / 1024) * 10) / 10,
    percentiles: FIO_PERCENTILES.map((percentile) => {
      const nines = -Math.log10(1 - percentile / 100);
      const latencyUs = medianUs * (0.6 + 0.4 * nines) * tailFactor ** Math.max(0, nines - 0.3);
      return { percentile, latencyUs: Math.round(latencyUs * 10) / 10 };
    }),
  };
}

/** IOPS per second around a replica loss: steady, a stall while the volume fails over, then recovery. */
function failoverSeries(): TimeSeries {
  const points: number[] = [];
  for (let s = 0; s < 60; s++) {
    const steady = 12_000 + Math.round(600 * Math.sin(s * 1.7) + 250 * Math.cos(s * 0.9));
    if (s === 20 || s === 21) points.push(0);
    else if (s === 22) points.push(Math.round(steady * 0.55));
    else if (s > 22 && s < 28) points.push(Math.round(steady * 0.8));
    else points.push(steady);
  }
  return {
    name: "iops",
    unit: "IOPS",
    intervalMs: 1000,
    points,
    marks: [
      { atMs: 19_850, label: "kill node2 (primary)", kind: "fault" },
      { atMs: 22_450, label: "first write acked on node3", kind: "recovered" },
      { atMs: 40_000, label: "node2 rejoined", kind: "info" },
    ],
    stalls: [{ fromMs: 20_000, toMs: 22_450 }],
  };
}

function haChecks(): CheckResult[] {
  return [
    {
      id: "ha.replica-loss",
      family: "ha",
      title: "Losing the primary replica under load",
      verdict: "pass",
      message: "I/O stalled 2,450 ms (at most 5,000 ms); no acknowledged write lost.",
      figures: [
        {
          name: "stallMs",
          value: 2450,
          unit: "ms",
          better: "lower",
          threshold: { max: 5000 },
          verdict: "pass",
          description: "Longest interval with no I/O completed after the fault.",
        },
        {
          name: "lostWrites",
          value: 0,
          unit: "count",
          better: "lower",
          threshold: { max: 0 },
          verdict: "pass",
          description: "Writes acknowledged then not read back.",
        },
        { name: "iopsAfterRecovery", value: 11_872.4, unit: "IOPS", better: "higher", verdict: "info" },
      ],
      series: [failoverSeries()],
      latency: [],
      notes: ["node2 was serving; RTO measured to the first write acknowledged on node3."],
      startedAt: "2025-05-14T09:12:03.120Z",
      durationMs: 71_400,
    },
    {
      id: "ha.partition",
      family: "ha",
      title: "Network partition of the primary",
      verdict: "fail",
      message: "I/O stalled 7,400 ms; the profile allows at most 5,000 ms.",
      figures: [
        { name: "stallMs", value: 7400, unit: "ms", better: "lower", threshold: { max: 5000 }, verdict: "fail" },
        { name: "lostWrites", value: 0, unit: "count", better: "lower", threshold: { max: 0 }, verdict: "pass" },
      ],
      series: [],
      latency: [],
      notes: [],
      startedAt: "2025-05-14T09:13:14.520Z",
      durationMs: 48_210,
      knownFailure: { issue: "keelson#412", reason: "Lease timeout is 6 s until the election rework lands." },
    },
  ];
}

function p99(curve: LatencyCurve): number {
  return curve.percentiles.find((p) => p.percentile === 99)?.latencyUs ?? 0;
}

function latencyCheck(): CheckResult {
  const curves = [
    curve("randread-4k-qd1", 1, 95, 9_800, 4),
    curve("randread-4k-qd1", 3, 118, 8_100, 4),
    curve("mixed-70-30-4k-qd1", 1, 160, 5_900, 4),
    curve("mixed-70-30-4k-qd1", 3, 290, 3_400, 4),
  ];
  const bounds: Record<string, number> = { "randread-4k-qd1": 2000, "mixed-70-30-4k-qd1": 4000 };
  return {
    id: "latency.percentiles",
    family: "latency",
    title: "Completion-latency percentiles by replica count",
    verdict: "pass",
    message: "p99 within bounds for every profile and replica count.",
    figures: curves
      .filter((c) => c.replicas === 3)
      .map((c) => ({
        name: `p99Us.${c.profile}.r${c.replicas}`,
        value: p99(c),
        unit: "us",
        better: "lower" as const,
        threshold: { max: bounds[c.profile] ?? 0 },
        verdict: "pass" as const,
      })),
    series: [],
    latency: curves,
    startedAt: "2025-05-14T09:14:37.000Z",
    durationMs: 245_000,
  };
}

function otherChecks(): CheckResult[] {
  return [
    {
      id: "qos.noisy-neighbour",
      family: "qos",
      title: "A noisy neighbour does not starve a limited volume",
      verdict: "pass",
      message: "The victim kept 94% of its IOPS while the neighbour ran unthrottled.",
      figures: [
        {
          name: "iopsRatio",
          value: 0.94,
          unit: "ratio",
          better: "higher",
          threshold: { min: 0.8, max: 1.2 },
          verdict: "pass",
          description: "Victim IOPS with the neighbour running, over victim IOPS alone.",
        },
      ],
      series: [],
      latency: [],
      startedAt: "2025-05-14T09:14:02.900Z",
      durationMs: 32_000,
    },
    {
      id: "qos.burst-credit",
      family: "qos",
      title: "Burst credits <refill> & drain",
      verdict: "error",
      message: "fio exited 1: <script>alert(\"x\")</script> & 'quoted' output\n\x1b[31mfio: pid=4242, err=5/file:io_u.c\x1b[0m",
      figures: [],
      series: [],
      latency: [],
      startedAt: "2025-05-14T09:14:35.000Z",
      durationMs: 1_250,
    },
    latencyCheck(),
    {
      id: "snapshot.crash-consistency",
      family: "snapshot",
      title: "Snapshots are crash-consistent",
      verdict: "not-applicable",
      message: "The target lacks the capability snapshot.",
      figures: [],
      series: [],
      latency: [],
      startedAt: "2025-05-14T09:18:42.000Z",
      durationMs: 3,
    },
  ];
}

/** A fresh copy of the sample report on every call, so that a test may change it freely. */
export function sampleReport(): Report {
  return {
    schemaVersion: 1,
    startedAt: "2025-05-14T09:12:00.000Z",
    finishedAt: "2025-05-14T09:18:42.010Z",
    environment: {
      kernel: "6.1.0-21-amd64",
      cpuCount: 8,
      cpuModel: "AMD EPYC 7B13",
      memoryBytes: 33_554_432_000,
      fioVersion: "fio-3.33",
      nodeVersion: "v20.12.2",
      suiteVersion: "0.1.0",
      gitCommit: "59e3b51",
      target: "keelson-local",
      targetDescription: { nodes: "3 (local processes)", transport: "NBD over unix sockets", version: "0.1.0" },
      duration: "standard",
      root: true,
    },
    options: {
      suites: ["ha", "qos", "latency", "snapshot"],
      faults: 3,
      nodes: 3,
      profileName: "default",
      profilePath: "profiles/default.yaml",
      checks: [],
      seed: 42,
    },
    summary: { pass: 3, fail: 1, notApplicable: 1, error: 1 },
    checks: [...haChecks(), ...otherChecks()],
  };
}
