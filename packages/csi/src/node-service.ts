import fs from "node:fs";
import path from "node:path";
import { status, type UntypedServiceImplementation } from "@grpc/grpc-js";
import type { KeelsonClient } from "@keelson/sdk";
import { isWriterMode, unsupportedReason, type WireVolumeCapability } from "./capabilities.js";
import { CsiError, csiUnary, invalidField, messageOf, VolumeLocks } from "./csi-errors.js";
import { attachExportDevice, detachExportDevice, findExportDevice } from "./export-device.js";
import { exitCode, isMounted, mountAt, run } from "./host-tools.js";
import { volumeNameOf } from "./ids.js";
import { parseParameters } from "./parameters.js";
import { nodeTopology } from "./topology.js";

/** Most volumes one node stages at once (each takes a loop device and an nbdfuse process). */
export const MAX_VOLUMES_PER_NODE = 64;

export interface NodeServiceOptions {
  nodeId: string;
  /** Where the driver records each staged volume's device (survives a driver restart). */
  stateDir: string;
  engine: Pick<KeelsonClient, "getNode" | "getVolume">;
}

function requirePath(value: string | undefined, field: string): string {
  if (!value) throw invalidField(field, "is required");
  if (!value.startsWith("/")) throw invalidField(field, "must be an absolute path");
  return value;
}

function requireCapability(cap: WireVolumeCapability | null | undefined): { cap: WireVolumeCapability; block: boolean } {
  if (!cap) throw invalidField("volume_capability", "is required");
  const why = unsupportedReason(cap);
  if (why) throw invalidField("volume_capability", why);
  return { cap, block: cap.access_type === "block" || Boolean(cap.block) };
}

/** Bytes read from the start of a device that must all be zero before it is formatted. */
const BLANK_PROBE_BYTES = 1024 * 1024;

/** True when the first MiB of `device` reads as zeros (a thin volume never written); a read error throws. */
function readsBlank(device: string): boolean {
  const fd = fs.openSync(device, "r");
  try {
    const buf = Buffer.alloc(BLANK_PROBE_BYTES);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).every((b) => b === 0);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Formats `device` with `fsType` only when it is blank: blkid finds no filesystem on it and its first MiB
 * reads as zeros. blkid also fails on a device it cannot read, so its answer alone is never taken as
 * "empty": formatting a volume that holds data loses it.
 */
async function formatOnce(device: string, fsType: string, mkfsOptions: string[]): Promise<void> {
  const found = await exitCode("blkid", ["-p", device]);
  if (found === 0) return;
  if (found !== 2) throw new CsiError(status.INTERNAL, `blkid -p ${device} failed (${found}): cannot tell whether it holds data`);
  if (!readsBlank(device)) {
    throw new CsiError(status.FAILED_PRECONDITION, `${device} holds data but no filesystem blkid knows: not formatting it`);
  }
  await run(`mkfs.${fsType}`, [...(fsType === "xfs" ? ["-q"] : ["-q", "-F"]), ...mkfsOptions, device]);
}

/** Bytes an ext4 filesystem on `device` spans (from its superblock). */
async function ext4Bytes(device: string): Promise<number> {
  const head = await run("dumpe2fs", ["-h", device]);
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(head)?.[1] ?? Number.NaN);
  return field("Block count") * field("Block size");
}

/**
 * Grows an unmounted ext4 filesystem to its device when the volume grew while it was not staged. Offline:
 * online growth (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE, which a node plugin may well not have.
 */
async function growExt4Offline(device: string): Promise<void> {
  const deviceBytes = Number((await run("blockdev", ["--getsize64", device])).trim());
  if ((await ext4Bytes(device)) >= deviceBytes) return;
  await run("e2fsck", ["-f", "-p", device]);
  await run("resize2fs", [device]);
}

/** Mount options that keep a read-only mount from writing (no journal replay). */
function readOnlyOptions(fsType: string): string[] {
  return ["ro", fsType === "xfs" ? "norecovery" : "noload"];
}

/** Mounts of `device` left anywhere (a raw block volume bind-mounted onto a file shows its devtmpfs path as its root). */
function mountsOfDevice(device: string): string[] {
  const root = `/${path.basename(device)}`;
  return fs
    .readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((line) => line.split(" ")[3] === root && / - devtmpfs /.test(line))
    .map((line) => line.split(" ")[4] ?? "");
}

/**
 * The CSI Node service: stages a volume's export as a block device (nbdfuse + a loop device) and, for
 * a filesystem volume, formats it on first use only and mounts it at the staging path; publishes by
 * bind mount (read-only honoured); reports usage. Every call is idempotent; unstaging leaves nothing
 * mounted, looped or running.
 */
export function nodeService(o: NodeServiceOptions): UntypedServiceImplementation {
  const locks = new VolumeLocks();
  fs.mkdirSync(o.stateDir, { recursive: true });
  return {
    NodeStageVolume: csiUnary(
      async (req: {
        volume_id: string;
        staging_target_path: string;
        volume_capability?: WireVolumeCapability | null;
        volume_context?: Record<string, string>;
        publish_context?: Record<string, string>;
      }) => {
        const volume = volumeNameOf(req.volume_id);
        const staging = requirePath(req.staging_target_path, "staging_target_path");
        const { cap, block } = requireCapability(req.volume_capability);
        // A static PV's attributes come here unchecked by CreateVolume: the same rules apply.
        const context = parseParameters({
          ...(req.volume_context?.fsType ? { fsType: req.volume_context.fsType } : {}),
          ...(req.volume_context?.mkfsOptions ? { mkfsOptions: req.volume_context.mkfsOptions } : {}),
        });
        const fsType = cap.mount?.fs_type || context.fsType;
        if (fsType !== "ext4" && fsType !== "xfs") throw invalidField("volume_capability.mount.fs_type", "ext4 or xfs");
        const readOnly = !isWriterMode(cap) || req.publish_context?.readOnly === "true";
        return locks.run(volume, "NodeStageVolume", async () => {
          // The same staging again is done; staged otherwise, the spec's answer is ALREADY_EXISTS.
          const staged = findExportDevice(o.stateDir, volume);
          if (staged?.device && staged.readOnly !== undefined && staged.readOnly !== readOnly) {
            throw new CsiError(
              status.ALREADY_EXISTS,
              `volume ${volume} is staged ${staged.readOnly ? "read-only" : "writable"} on this node; asked ${readOnly ? "read-only" : "writable"}`,
            );
          }
          const mounted = block ? null : mountAt(staging);
          if (mounted) {
            const wantReadOnly = readOnly || (cap.mount?.mount_flags ?? []).includes("ro");
            if (mounted.fsType !== fsType || mounted.readOnly !== wantReadOnly) {
              throw new CsiError(
                status.ALREADY_EXISTS,
                `${staging} holds ${mounted.fsType}${mounted.readOnly ? " read-only" : ""}; asked ${fsType}${readOnly ? " read-only" : ""}`,
              );
            }
            return {};
          }
          await o.engine.getVolume({ name: volume });
          const socket = (await o.engine.getNode()).nbdUnixSocket;
          if (!socket)
            throw new CsiError(
              status.FAILED_PRECONDITION,
              "the engine serves no NBD unix socket on this node (keelsond --nbd-socket)",
            );
          const d = await attachExportDevice(o.stateDir, volume, socket, readOnly);
          if (block) return {};
          fs.mkdirSync(staging, { recursive: true });
          if (!readOnly) {
            await formatOnce(d.device, fsType, context.mkfsOptions);
            if (fsType === "ext4") await growExt4Offline(d.device);
          }
          const options = [...(readOnly ? readOnlyOptions(fsType) : []), ...(cap.mount?.mount_flags ?? [])];
          await run("mount", ["-t", fsType, ...(options.length > 0 ? ["-o", options.join(",")] : []), d.device, staging]);
          return {};
        });
      },
    ),

    NodeUnstageVolume: csiUnary(async (req: { volume_id: string; staging_target_path: string }) => {
      const volume = volumeNameOf(req.volume_id);
      const staging = requirePath(req.staging_target_path, "staging_target_path");
      return locks.run(volume, "NodeUnstageVolume", async () => {
        const d = findExportDevice(o.stateDir, volume);
        const left = d?.device ? mountsOfDevice(d.device) : [];
        if (left.length > 0) {
          throw new CsiError(
            status.FAILED_PRECONDITION,
            `volume ${volume} is still published at ${left.join(", ")}: unpublish it first`,
          );
        }
        if (isMounted(staging)) await run("umount", [staging]);
        await detachExportDevice(o.stateDir, volume);
        return {};
      });
    }),

    NodePublishVolume: csiUnary(
      async (req: {
        volume_id: string;
        staging_target_path: string;
        target_path: string;
        volume_capability?: WireVolumeCapability | null;
        readonly: boolean;
      }) => {
        const volume = volumeNameOf(req.volume_id);
        const staging = requirePath(req.staging_target_path, "staging_target_path");
        const target = requirePath(req.target_path, "target_path");
        const { block } = requireCapability(req.volume_capability);
        return locks.run(volume, "NodePublishVolume", async () => {
          const mounted = mountAt(target);
          if (mounted) {
            // Published already: done when as asked, else the spec's ALREADY_EXISTS.
            const wasBlock = !fs.statSync(target).isDirectory();
            // A bind mount of a read-only staging is read-only whatever was asked; a device node's bind only when asked.
            const wantReadOnly = req.readonly || (!block && mountAt(staging)?.readOnly === true);
            if (wasBlock !== block || mounted.readOnly !== wantReadOnly) {
              throw new CsiError(
                status.ALREADY_EXISTS,
                `${target} is published ${wasBlock ? "as a block device" : "as a filesystem"}${mounted.readOnly ? " read-only" : ""}; asked ${block ? "a block device" : "a filesystem"}${req.readonly ? " read-only" : ""}`,
              );
            }
            return {};
          }
          let source: string;
          if (block) {
            const d = findExportDevice(o.stateDir, volume);
            if (!d) throw new CsiError(status.FAILED_PRECONDITION, `volume ${volume} is not staged on this node`);
            source = d.device;
            fs.writeFileSync(target, "", { flag: "a" });
          } else {
            if (!isMounted(staging))
              throw new CsiError(status.FAILED_PRECONDITION, `volume ${volume} is not staged at ${staging}`);
            source = staging;
            fs.mkdirSync(target, { recursive: true });
          }
          await run("mount", ["--bind", source, target]);
          if (req.readonly) {
            // Never left writable: a retry would find it mounted and take it for done.
            await run("mount", ["-o", "remount,bind,ro", target]).catch(async (error: unknown) => {
              await run("umount", [target]).catch(() => undefined);
              throw error;
            });
          }
          return {};
        });
      },
    ),

    NodeUnpublishVolume: csiUnary(async (req: { volume_id: string; target_path: string }) => {
      const volume = volumeNameOf(req.volume_id);
      const target = requirePath(req.target_path, "target_path");
      return locks.run(volume, "NodeUnpublishVolume", async () => {
        if (isMounted(target)) await run("umount", [target]);
        // Only once unmounted, and a directory only if empty: never the volume's files by mistake.
        if (isDir(target)) fs.rmdirSync(target);
        else fs.rmSync(target, { force: true });
        return {};
      });
    }),

    NodeGetVolumeStats: csiUnary(async (req: { volume_id: string; volume_path: string }) => {
      const volume = volumeNameOf(req.volume_id);
      const where = requirePath(req.volume_path, "volume_path");
      if (!fs.existsSync(where)) throw new CsiError(status.NOT_FOUND, `${where} does not exist`);
      const healthy = findExportDevice(o.stateDir, volume) !== null;
      const condition = {
        abnormal: !healthy,
        message: healthy ? "" : `volume ${volume} has no device on this node`,
      };
      if (fs.statSync(where).isDirectory()) {
        const s = fs.statfsSync(where);
        return {
          usage: [
            {
              unit: "BYTES",
              total: String(s.blocks * s.bsize),
              available: String(s.bavail * s.bsize),
              used: String((s.blocks - s.bfree) * s.bsize),
            },
            { unit: "INODES", total: String(s.files), available: String(s.ffree), used: String(s.files - s.ffree) },
          ],
          volume_condition: condition,
        };
      }
      const size = (await run("blockdev", ["--getsize64", where])).trim();
      return { usage: [{ unit: "BYTES", total: size, available: "0", used: "0" }], volume_condition: condition };
    }),

    NodeExpandVolume: csiUnary(
      async (req: {
        volume_id: string;
        volume_path: string;
        capacity_range?: { required_bytes?: string } | null;
        staging_target_path?: string;
      }) => {
        const volume = volumeNameOf(req.volume_id);
        requirePath(req.volume_path, "volume_path");
        return locks.run(volume, "NodeExpandVolume", async () => {
          const d = findExportDevice(o.stateDir, volume);
          if (!d?.device) throw new CsiError(status.NOT_FOUND, `volume ${volume} is not staged on this node`);
          await run("losetup", ["--set-capacity", d.device]);
          const size = Number((await run("blockdev", ["--getsize64", d.device])).trim());
          const required = Number(req.capacity_range?.required_bytes ?? "0");
          if (size < required) {
            // An nbdfuse file keeps the size it was opened with: the device grows when the volume is staged again.
            throw new CsiError(
              status.FAILED_PRECONDITION,
              `volume ${volume}: the device on this node is ${size} bytes, ${required} asked; it grows only when staged again (expansion is offline)`,
            );
          }
          const mountPoint =
            req.staging_target_path && isMounted(req.staging_target_path) ? req.staging_target_path : req.volume_path;
          if (isMounted(mountPoint) && fs.statSync(mountPoint).isDirectory()) {
            const fsType = (await run("findmnt", ["-n", "-o", "FSTYPE", "--target", mountPoint])).trim();
            if (fsType === "xfs") await run("xfs_growfs", [mountPoint]);
            else if ((await ext4Bytes(d.device)) < size) {
              // Grown on the device while mounted: ext4 grows when it is next staged (see growExt4Offline).
              await run("resize2fs", [d.device]).catch((error: unknown) => {
                throw new CsiError(
                  status.FAILED_PRECONDITION,
                  `volume ${volume}: ext4 could not grow online (${messageOf(error)}); it grows when staged again`,
                );
              });
            }
          }
          return { capacity_bytes: String(size) };
        });
      },
    ),

    NodeGetCapabilities: csiUnary(async () => ({
      capabilities: [
        "STAGE_UNSTAGE_VOLUME",
        "GET_VOLUME_STATS",
        "VOLUME_CONDITION",
        "EXPAND_VOLUME",
        "SINGLE_NODE_MULTI_WRITER",
      ].map((type) => ({
        rpc: { type },
      })),
    })),

    NodeGetInfo: csiUnary(async () => {
      const node = await o.engine.getNode();
      return {
        node_id: o.nodeId,
        max_volumes_per_node: String(MAX_VOLUMES_PER_NODE),
        accessible_topology: nodeTopology({ nodeId: o.nodeId, zone: node.zone }),
      };
    }),
  };
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
