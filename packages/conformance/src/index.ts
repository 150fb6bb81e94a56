// @keelson/conformance: the suite as a library. The CLI (`keelson-conformance`)
// is a thin layer over these.

export type { Check, CheckContext, CheckOutcome, MeasuredFigure, Timing } from "./checks/check.js";
export { TIMING } from "./checks/check.js";
export { figureFailure, judge, judgeFigure } from "./checks/judge.js";
export { ALL_CHECKS, CHECKS_BY_FAMILY, checksOf, DEFAULT_THRESHOLDS } from "./checks/registry.js";
export { notApplicableReason, type RunChecksRequest, runChecks } from "./checks/runner.js";
export { main } from "./cli/main.js";
export {
  CONFORMANCE_ERROR_CODES,
  ConformanceError,
  type ConformanceErrorCode,
  type ConformanceErrorOptions,
  isConformanceError,
} from "./errors.js";
export {
  BENCH_PROFILES,
  benchProfile,
  type FioJobSpec,
  type FioProfile,
  type FioResult,
  type FioSideResult,
  fioVersion,
  type ProfileRun,
  profileJob,
  type RunFioRequest,
  runFio,
} from "./fio/index.js";
export { type NbdConnection, type NbdReplyError, openNbd, parseNbdUri } from "./nbd/index.js";
export { loadProfile, parseProfile, profileToYaml } from "./profile/load.js";
export type { Profile } from "./profile/profile.js";
export {
  type Comparison,
  compareReports,
  parseRegressionBound,
  readReport,
  renderComparison,
  renderHtml,
  renderInChromium,
  renderJunit,
  renderSummaryTable,
  reRender,
  validateReport,
  writeReport,
} from "./report/index.js";
export type {
  Better,
  CheckResult,
  DurationSetting,
  Environment,
  Family,
  Figure,
  LatencyCurve,
  Report,
  Threshold,
  TimeSeries,
  Verdict,
} from "./report/types.js";
export { FAMILIES, REPORT_SCHEMA_VERSION } from "./report/types.js";
export { runSuite, type SuiteOptions, type SuiteResult } from "./run/run-suite.js";
export { type CreateTargetOptions, createTarget, TARGET_KINDS, type TargetKind } from "./target/create.js";
export { type LocalTargetOptions, startLocalTarget } from "./target/local.js";
export type {
  AccessMode,
  AttachedVolume,
  AttachRequest,
  Capability,
  DataPath,
  ProvisionedVolume,
  ProvisionRequest,
  QosSpec,
  RateSpec,
  SnapshotId,
  Target,
  TargetFaults,
  VolumeHealth,
} from "./target/target.js";
export { CAPABILITY_TEXT } from "./target/target.js";
export { type LiveSample, type Progress, SILENT_PROGRESS } from "./ui/progress.js";
export { TerminalProgress } from "./ui/terminal.js";
