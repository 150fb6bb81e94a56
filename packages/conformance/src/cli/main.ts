// keelson-conformance: run, list, compare, report, profile. Parses flags and
// calls the library; exit codes: 0 all judged checks passed, 1 a check failed
// or errored (or a regression), 2 bad usage, 130 interrupted.

import { parseArgs } from "node:util";
import pc from "picocolors";
import { ALL_CHECKS, DEFAULT_THRESHOLDS } from "../checks/registry.js";
import { parseRegressionBound } from "../compare/bound.js";
import { compareReports } from "../compare/compare.js";
import { renderComparison } from "../compare/render.js";
import { ConformanceError, isConformanceError } from "../errors.js";
import { profileToYaml } from "../profile/load.js";
import { renderSummaryTable } from "../report/table.js";
import { type DurationSetting, FAMILIES, type Family } from "../report/types.js";
import { readReport } from "../report/validate.js";
import { reRender } from "../report/write.js";
import { runSuite } from "../run/run-suite.js";
import { TARGET_KINDS, type TargetKind } from "../target/create.js";
import { parseParameterList } from "../target/csi/csi-target.js";
import { CAPABILITY_TEXT } from "../target/target.js";
import { TerminalProgress } from "../ui/terminal.js";

const USAGE = `keelson-conformance: conformance and benchmark suite for block storage

  keelson-conformance run [--target local] [--nodes 3] [--suite ha,qos,latency,snapshot]
                          [--out DIR] [--duration short|standard|long] [--profile FILE]
                          [--faults N] [--seed N] [--check ID,...]
  keelson-conformance run --target csi --endpoint unix:///path/csi.sock
                          [--parameters KEY=VALUE,...] [--faults-script FILE] [same options]
  keelson-conformance list                       the checks, one line each on what they measure
  keelson-conformance compare BASELINE.json CURRENT.json [--max-regression 10%]
  keelson-conformance report DIR                 re-render report.html and junit.xml from DIR/report.json
  keelson-conformance profile                    print the default profile (YAML) to edit
`;

function usage(message: string): ConformanceError {
  return new ConformanceError({ code: "INVALID_ARGUMENT", message: `${message}\n\n${USAGE}` });
}

function oneOf<const T extends string>(value: string, valid: readonly T[], flag: string): T {
  if (!(valid as readonly string[]).includes(value)) throw usage(`${flag} ${value}: valid: ${valid.join(", ")}`);
  return value as T;
}

function integer(value: string, flag: string, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw usage(`${flag} ${value}: an integer >= ${min} is needed`);
  return n;
}

async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      target: { type: "string", default: "local" },
      nodes: { type: "string", default: "3" },
      suite: { type: "string", default: FAMILIES.join(",") },
      out: { type: "string", default: "conformance-report" },
      duration: { type: "string", default: "short" },
      profile: { type: "string" },
      faults: { type: "string", default: "10" },
      seed: { type: "string" },
      check: { type: "string" },
      isolation: { type: "string" },
      endpoint: { type: "string" },
      parameters: { type: "string" },
      "faults-script": { type: "string" },
    },
    strict: true,
  });
  const suites = (values.suite as string).split(",").map((s) => oneOf(s.trim(), FAMILIES, "--suite")) as Family[];
  const controller = new AbortController();
  const progress = new TerminalProgress({ tty: process.stdout.isTTY === true });
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupts++;
    if (interrupts === 1) {
      process.stderr.write(`\n${signal}: stopping the load and cleaning up (namespaces, devices, processes)...\n`);
      controller.abort();
    } else process.stderr.write(`${signal} again: still cleaning up; it will not be left half done\n`);
  };
  // A rejection nobody handled is a bug of the suite: stop the run and clean up rather than let Node exit with everything left behind.
  let internalError: unknown = null;
  const onUnhandled = (reason: unknown) => {
    internalError ??= reason;
    process.stderr.write(`\nINTERNAL: unhandled rejection: ${(reason as Error)?.stack ?? String(reason)}\ncleaning up...\n`);
    controller.abort();
  };
  process.on("unhandledRejection", onUnhandled);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal);
  const target = oneOf(values.target as string, TARGET_KINDS, "--target") as TargetKind;
  if (target !== "csi" && (values.endpoint || values.parameters || values["faults-script"])) {
    throw usage("--endpoint, --parameters and --faults-script go with --target csi");
  }
  if (target === "csi" && !values.endpoint) throw usage("--target csi needs --endpoint unix:///path/csi.sock");
  const csi = values.endpoint
    ? {
        endpoint: values.endpoint,
        ...(values.parameters ? { parameters: parseParameterList(values.parameters) } : {}),
        ...(values["faults-script"] ? { faultsScript: values["faults-script"] } : {}),
      }
    : undefined;
  const seed = values.seed ? integer(values.seed, "--seed", 0) : Date.now() % 2 ** 31;
  try {
    const { report, paths } = await runSuiteOrInternal(() => internalError, {
      target,
      ...(csi ? { csi } : {}),
      nodes: integer(values.nodes as string, "--nodes", 1),
      suites,
      out: values.out as string,
      duration: oneOf(values.duration as string, ["short", "standard", "long"], "--duration") as DurationSetting,
      ...(values.profile ? { profilePath: values.profile } : {}),
      faults: integer(values.faults as string, "--faults", 0),
      seed,
      progress,
      signal: controller.signal,
      ...(values.isolation ? { isolation: oneOf(values.isolation, ["netns", "loopback"] as const, "--isolation") } : {}),
      ...(values.check ? { only: values.check.split(",").map((s) => s.trim()) } : {}),
    });
    progress.done();
    const color = process.stdout.isTTY === true;
    process.stdout.write(`\n${renderSummaryTable(report, { color })}\n`);
    process.stdout.write(`\nseed ${seed}\nreport: ${paths.htmlPath}\n        ${paths.jsonPath}\n        ${paths.junitPath}\n`);
    // A failure the profile lists as known is reported as one, but does not fail the run.
    const failing = report.checks.filter((c) => c.verdict === "error" || (c.verdict === "fail" && !c.knownFailure));
    return failing.length > 0 ? 1 : 0;
  } finally {
    progress.done();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.off("SIGHUP", onSignal);
    process.off("unhandledRejection", onUnhandled);
  }
}

/** runSuite, but a run cancelled because of an unhandled rejection fails as INTERNAL, not as interrupted. */
async function runSuiteOrInternal(internal: () => unknown, options: Parameters<typeof runSuite>[0]) {
  try {
    return await runSuite(options);
  } catch (error) {
    const cause = internal();
    if (cause === null) throw error;
    throw new ConformanceError({
      code: "INTERNAL",
      message: `the suite failed: ${(cause as Error)?.message ?? String(cause)}`,
      cause,
    });
  }
}

function list(): number {
  const width = Math.max(...ALL_CHECKS.map((c) => c.id.length));
  for (const c of ALL_CHECKS) {
    const needs = c.needs.length > 0 ? pc.dim(`  [needs ${c.needs.join(", ")}]`) : "";
    process.stdout.write(`${c.id.padEnd(width)}  ${c.measures}${needs}\n`);
  }
  process.stdout.write(`\ncapabilities a target may declare:\n`);
  for (const [cap, text] of Object.entries(CAPABILITY_TEXT)) process.stdout.write(`  ${cap.padEnd(28)} ${text}\n`);
  return 0;
}

function compare(args: string[]): number {
  const { values, positionals } = parseArgs({
    args,
    options: { "max-regression": { type: "string", default: "10%" } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 2) throw usage("compare needs BASELINE.json and CURRENT.json");
  const [basePath, currentPath] = positionals as [string, string];
  const comparison = compareReports(readReport(basePath), readReport(currentPath), {
    maxRegressionPct: parseRegressionBound(values["max-regression"] as string),
  });
  process.stdout.write(`${renderComparison(comparison, { color: process.stdout.isTTY === true })}\n`);
  return comparison.regressions.length > 0 ? 1 : 0;
}

function report(args: string[]): number {
  const [dir] = args;
  if (!dir || args.length !== 1) throw usage("report needs the report folder");
  const paths = reRender(dir);
  process.stdout.write(`${paths.htmlPath}\n${paths.junitPath}\n`);
  return 0;
}

function profile(): number {
  process.stdout.write(
    profileToYaml({
      name: "default",
      path: "",
      thresholds: DEFAULT_THRESHOLDS as Record<string, Record<string, { min?: number; max?: number }>>,
    }),
  );
  return 0;
}

/** Runs the CLI with `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "run":
        return await run(rest);
      case "list":
        return list();
      case "compare":
        return compare(rest);
      case "report":
        return report(rest);
      case "profile":
        return profile();
      case undefined:
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw usage(`unknown command ${command}`);
    }
  } catch (error) {
    if (isConformanceError(error)) {
      process.stderr.write(`keelson-conformance: ${error.code}: ${error.message}\n`);
      if (error.code === "CANCELLED") return 130;
      return error.code === "INVALID_ARGUMENT" ? 2 : 1;
    }
    if (error instanceof TypeError && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`keelson-conformance: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    process.stderr.write(`keelson-conformance: INTERNAL: ${(error as Error)?.stack ?? String(error)}\n`);
    return 1;
  }
}
