// The fio runner's public surface, for the suite's entry and for bench/.

export {
  DEFAULT_FILESYSTEM_FILE_BYTES,
  type FioJobFileOptions,
  filesystemJobPath,
  fioJobFile,
  PERCENTILE_LIST,
} from "./job-file.js";
export { BENCH_PROFILES, benchProfile, type FioProfile, type ProfileRun, profileJob } from "./profiles.js";
export { FIO_KILL_GRACE_MS, runFio } from "./runner.js";
export type { FioJobSpec, FioResult, FioSideResult, RunFioRequest } from "./types.js";
export { fioVersion } from "./version.js";
