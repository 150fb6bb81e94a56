import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { KeelsonError } from "@keelson/sdk";
import { isMounted, run } from "./host-tools.js";

/** Longest nbdfuse may take to connect and mount its file. */
const FUSE_READY_TIMEOUT_MS = 15_000;
/** Longest nbdfuse may take to exit after its mount is gone. */
const FUSE_EXIT_TIMEOUT_MS = 5_000;

/** A volume's export as a block device on this node, as recorded in the driver's state directory. */
export interface ExportDevice {
  volume: string;
  /** The loop device over the nbdfuse file. */
  device: string;
  /** nbdfuse's mount point (its file `disk` is the export). */
  fuseDir: string;
  /** nbdfuse's process id: the only process this driver ever signals. */
  fusePid: number;
  /** Served read-only (nbdfuse -r, a read-only loop device): a reader's staging. Unknown in records made before it was kept. */
  readOnly?: boolean;
}

function stateFile(stateDir: string, volume: string): string {
  return path.join(stateDir, volume, "device.json");
}

/** The recorded device of `volume`, or null when it has none. */
export function findExportDevice(stateDir: string, volume: string): ExportDevice | null {
  const file = stateFile(stateDir, volume);
  if (!fs.existsSync(file)) return null;
  const d = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<ExportDevice>;
  // A record from before readOnly was kept: only writers were staged then.
  return {
    volume: d.volume ?? volume,
    device: d.device ?? "",
    fuseDir: d.fuseDir ?? "",
    fusePid: d.fusePid ?? 0,
    readOnly: d.readOnly ?? false,
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The file a loop device is over, or null when it is no loop device in use. */
async function loopBackingFile(device: string): Promise<string | null> {
  if (!device) return null;
  const out = await run("losetup", ["--list", "--noheadings", "--output", "BACK-FILE", device]).catch(() => "");
  return out.trim() || null;
}

/** The recorded pid is still the nbdfuse this driver started for that mount (a pid can be reused after a reboot). */
function isOurNbdfuse(d: ExportDevice): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${d.fusePid}/cmdline`, "utf8").split("\0");
    return path.basename(cmdline[0] ?? "") === "nbdfuse" && cmdline.some((a) => a.startsWith(d.fuseDir));
  } catch {
    return false;
  }
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

/**
 * Makes the NBD export `volume` of the engine's unix socket a block device here: nbdfuse serves it as a
 * file, and a loop device (direct I/O off: FUSE pages would be read twice otherwise) is set up over
 * that file. Kernel NBD is not used: no /dev/nbd* exists on hosts without the module, and nbdfuse needs
 * only FUSE. Idempotent: a device already recorded and present is returned.
 */
export async function attachExportDevice(
  stateDir: string,
  volume: string,
  nbdSocket: string,
  readOnly: boolean,
): Promise<ExportDevice> {
  const known = findExportDevice(stateDir, volume);
  // Trusted only when its nbdfuse is the one started for it and its loop device is still over that file
  // (after a reboot, the pid and /dev/loopN may belong to others).
  if (known && isOurNbdfuse(known) && (await loopBackingFile(known.device)) === path.join(known.fuseDir, "disk")) return known;
  if (known) await detachExportDevice(stateDir, volume);
  const dir = path.join(stateDir, volume);
  const fuseDir = path.join(dir, "fuse");
  const pidFile = path.join(dir, "nbdfuse.pid");
  fs.mkdirSync(fuseDir, { recursive: true });
  fs.rmSync(pidFile, { force: true });
  const log = fs.openSync(path.join(dir, "nbdfuse.log"), "w");
  const uri = `nbd+unix:///${volume}?socket=${nbdSocket}`;
  const child = spawn("nbdfuse", [...(readOnly ? ["-r"] : []), "-P", pidFile, path.join(fuseDir, "disk"), uri], {
    stdio: ["ignore", log, log],
    detached: true,
  });
  fs.closeSync(log);
  child.unref();
  const spawned = await new Promise<boolean>((resolve) => {
    child.once("spawn", () => resolve(true));
    child.once("error", () => resolve(false));
  });
  if (!spawned || child.pid === undefined) {
    throw new KeelsonError({ code: "INTERNAL", message: "nbdfuse is not installed on this node (Debian: libnbd-bin, fuse3)" });
  }
  const fusePid = child.pid;
  // Recorded before anything can fail, so that NodeUnstage finds and undoes what was started.
  fs.writeFileSync(
    stateFile(stateDir, volume),
    JSON.stringify({ volume, device: "", fuseDir, fusePid, readOnly } satisfies ExportDevice),
  );
  const ready = await waitFor(() => fs.existsSync(pidFile) || child.exitCode !== null, FUSE_READY_TIMEOUT_MS);
  if (!ready || child.exitCode !== null) {
    if (isMounted(fuseDir)) await run("fusermount3", ["-u", fuseDir]).catch(() => undefined);
    if (child.exitCode === null) process.kill(fusePid, "SIGTERM");
    const why = fs.readFileSync(path.join(dir, "nbdfuse.log"), "utf8").trim();
    throw new KeelsonError({
      code: "UNAVAILABLE",
      message: `nbdfuse could not open export ${volume} at ${nbdSocket}: ${why || "no answer"}`,
    });
  }
  let device: string;
  try {
    device = (
      await run("losetup", ["--find", "--show", ...(readOnly ? ["--read-only"] : []), path.join(fuseDir, "disk")])
    ).trim();
  } catch (error) {
    await run("fusermount3", ["-u", fuseDir]).catch(() => undefined);
    throw error;
  }
  const recorded: ExportDevice = { volume, device, fuseDir, fusePid, readOnly };
  fs.writeFileSync(stateFile(stateDir, volume), JSON.stringify(recorded));
  return recorded;
}

/** Undoes {@link attachExportDevice}: the loop device, the FUSE mount, nbdfuse. Idempotent. */
export async function detachExportDevice(stateDir: string, volume: string): Promise<void> {
  const d = findExportDevice(stateDir, volume);
  if (!d) return;
  const looped = (await run("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"])).split("\n");
  if (looped.some((l) => l.trim().split(/\s+/)[0] === d.device && l.includes(d.fuseDir)))
    await run("losetup", ["--detach", d.device]);
  if (isMounted(d.fuseDir)) await run("fusermount3", ["-u", d.fuseDir]);
  if (!(await waitFor(() => !alive(d.fusePid), FUSE_EXIT_TIMEOUT_MS)) && isOurNbdfuse(d)) process.kill(d.fusePid, "SIGKILL");
  fs.rmSync(path.join(stateDir, volume), { recursive: true, force: true });
}
