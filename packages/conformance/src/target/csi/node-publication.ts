// Where the csi target plays kubelet: one staging per volume on this node (ControllerPublish and
// NodeStage once), one NodePublish per user of it, and a teardown that stops at the first step that
// fails and resumes there on the next try, so nothing is deleted or unpublished under a live mount.

import fs from "node:fs";
import path from "node:path";
import { ConformanceError } from "../../errors.js";
import type { CsiClient, CsiReply } from "./csi-client.js";

/** How a volume is used on this node: a raw block device or a mounted filesystem, writable or not. */
export interface PublishMode {
  block: boolean;
  fsType: string;
  readOnly: boolean;
}

/** One NodePublish of a volume: the path handed to its user. */
interface Publication {
  targetPath: string;
  published: boolean;
}

/** A volume made usable on this node, and what of that is done (each flag cleared only once undone). */
interface Staging {
  volumeId: string;
  name: string;
  mode: PublishMode;
  stagingPath: string;
  controllerPublished: boolean;
  publishContext: CsiReply;
  staged: boolean;
  users: Set<Publication>;
}

/** A CSI VolumeCapability: a raw block device or a mounted filesystem, one writer node (or read-only). */
export function capabilityFor(mode: PublishMode): object {
  const access_mode = { mode: mode.readOnly ? "SINGLE_NODE_READER_ONLY" : "SINGLE_NODE_WRITER" };
  return mode.block ? { block: {}, access_mode } : { mount: { fs_type: mode.fsType, mount_flags: [] }, access_mode };
}

/** True when `p` is a mount point now (/proc/self/mountinfo, so bind mounts of device nodes count). */
function isMountPoint(p: string): boolean {
  const resolved = fs.existsSync(p) ? fs.realpathSync(p) : p;
  return fs
    .readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .some(
      (l) => l.split(" ")[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))) === resolved,
    );
}

/**
 * After the driver said a path is undone: it must not be mounted any more (TARGET_FAILED naming it,
 * never a recursive delete through a mount), and what is left of it (the driver should remove a
 * target path itself; the staging directory is the CO's) is removed without recursion.
 */
function removeUnmounted(p: string, what: string): void {
  if (isMountPoint(p)) {
    throw new ConformanceError({ code: "TARGET_FAILED", message: `the driver answered OK but left ${what} ${p} mounted` });
  }
  if (!fs.existsSync(p)) return;
  if (fs.lstatSync(p).isDirectory()) fs.rmdirSync(p);
  else fs.unlinkSync(p);
}

export class NodePublisher {
  readonly #client: CsiClient;
  readonly #nodeId: string;
  readonly #dir: string;
  readonly #controllerPublishes: boolean;
  readonly #stages: boolean;
  readonly #stagings = new Map<string, Staging>();
  #made = 0;

  constructor(client: CsiClient, o: { nodeId: string; dir: string; controllerPublishes: boolean; stages: boolean }) {
    this.#client = client;
    this.#nodeId = o.nodeId;
    this.#dir = o.dir;
    this.#controllerPublishes = o.controllerPublishes;
    this.#stages = o.stages;
  }

  /** Volume ids with anything still published or staged here. */
  get volumeIds(): string[] {
    return [...this.#stagings.keys()];
  }

  /** The paths each current user of `volumeId` has, with the staging path (for NodeExpandVolume). */
  uses(volumeId: string): { targetPath: string; stagingPath: string; mode: PublishMode }[] {
    const s = this.#stagings.get(volumeId);
    return s ? [...s.users].map((u) => ({ targetPath: u.targetPath, stagingPath: s.stagingPath, mode: s.mode })) : [];
  }

  /**
   * Publishes `volumeId` for one more user, staging it first when it is not yet (NOT_SUPPORTED when it is
   * staged here in another mode: CSI stages a volume once per node). Resolves with the user's path and
   * its detach (idempotent, resumable).
   */
  async publish(volumeId: string, name: string, mode: PublishMode): Promise<{ targetPath: string; detach: () => Promise<void> }> {
    let s = this.#stagings.get(volumeId);
    if (s && (s.mode.block !== mode.block || s.mode.fsType !== mode.fsType || s.mode.readOnly !== mode.readOnly)) {
      throw new ConformanceError({
        code: "NOT_SUPPORTED",
        message: `csi target: ${name} is in use on this node as ${JSON.stringify(s.mode)}; CSI stages a volume once per node, so ${JSON.stringify(mode)} waits for its detach`,
      });
    }
    if (!s) {
      s = {
        volumeId,
        name,
        mode,
        stagingPath: path.join(this.#dir, "staging", `${name}-${++this.#made}`),
        controllerPublished: false,
        publishContext: {},
        staged: false,
        users: new Set(),
      };
      this.#stagings.set(volumeId, s);
    }
    const user: Publication = { targetPath: path.join(this.#dir, "publish", `${name}-${++this.#made}`), published: false };
    s.users.add(user);
    const detach = () => this.#release(volumeId, user);
    try {
      const cap = capabilityFor(mode);
      if (this.#controllerPublishes && !s.controllerPublished) {
        const reply = await this.#client.call("Controller", "ControllerPublishVolume", {
          volume_id: volumeId,
          node_id: this.#nodeId,
          volume_capability: cap,
          readonly: mode.readOnly,
        });
        s.publishContext = (reply.publish_context ?? {}) as CsiReply;
        s.controllerPublished = true;
      }
      if (this.#stages && !s.staged) {
        // The CO makes the staging directory; the driver mounts there.
        fs.mkdirSync(s.stagingPath, { recursive: true });
        await this.#client.call("Node", "NodeStageVolume", {
          volume_id: volumeId,
          publish_context: s.publishContext,
          staging_target_path: s.stagingPath,
          volume_capability: cap,
        });
        s.staged = true;
      }
      // The CO makes the target's parent; the driver makes the target (a file for block, a directory to mount).
      fs.mkdirSync(path.dirname(user.targetPath), { recursive: true });
      await this.#client.call("Node", "NodePublishVolume", {
        volume_id: volumeId,
        publish_context: s.publishContext,
        ...(this.#stages ? { staging_target_path: s.stagingPath } : {}),
        target_path: user.targetPath,
        volume_capability: cap,
        readonly: mode.readOnly,
      });
      user.published = true;
    } catch (error) {
      await detach().catch((undo: unknown) => {
        throw new ConformanceError({
          code: "TARGET_FAILED",
          message: `${(error as Error).message}; undoing it failed too: ${(undo as Error).message}`,
          cause: error,
        });
      });
      throw error;
    }
    return { targetPath: user.targetPath, detach };
  }

  /** Undoes one user of a volume; the last one unstages and unpublishes it. Stops at the first failure, which a later call retries. */
  async #release(volumeId: string, user: Publication | null): Promise<void> {
    const s = this.#stagings.get(volumeId);
    if (!s) return;
    if (user && s.users.has(user)) {
      if (user.published) {
        await this.#client.call("Node", "NodeUnpublishVolume", { volume_id: volumeId, target_path: user.targetPath });
        user.published = false;
      }
      removeUnmounted(user.targetPath, "the published path");
      s.users.delete(user);
    }
    if (s.users.size > 0) return;
    if (s.staged) {
      await this.#client.call("Node", "NodeUnstageVolume", { volume_id: volumeId, staging_target_path: s.stagingPath });
      s.staged = false;
    }
    removeUnmounted(s.stagingPath, "the staging path");
    if (s.controllerPublished) {
      await this.#client.call("Controller", "ControllerUnpublishVolume", { volume_id: volumeId, node_id: this.#nodeId });
      s.controllerPublished = false;
    }
    this.#stagings.delete(volumeId);
  }

  /** Undoes every user of `volumeId` and its staging (before the volume is deleted, or at close). */
  async releaseAll(volumeId: string): Promise<void> {
    const s = this.#stagings.get(volumeId);
    if (!s) return;
    for (const user of [...s.users]) await this.#release(volumeId, user);
    await this.#release(volumeId, null);
  }
}
