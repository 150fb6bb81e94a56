import { KeelsonError } from "@keelson/sdk";

/**
 * A frontend's write-intent log as each replica keeps it, with the data it
 * covers (as DRBD keeps its activity log on its own disks): the extents a
 * write may have been in flight in when that frontend stopped. The next
 * frontend gathers them from the replicas it reaches, so a write to a cold
 * extent waits on the replicas, not on etcd.
 */
export interface ActivityLogRecord {
  /** Attachment epoch of the frontend that saved it (the connection's, never the payload's). */
  epoch: number;
  /** That frontend's save number: a save that arrives late never replaces a newer one. */
  sequence: number;
  extentBytes: number;
  /** Every extent may differ (a resync still to do whose plan is unknown). */
  all: boolean;
  /** Extent indexes, ascending; empty when `all`. */
  extents: number[];
}

/**
 * Most extents one log names (4 GiB of 4 MiB extents written within 2 s): a
 * frontend with more saves `all` instead (a full resync after a failover,
 * never a lost one). It bounds the log's size in the pool's catalog.
 */
export const MAX_ACTIVITY_EXTENTS = 1_024;
const HEADER_BYTES = 24;
/** Largest encoded log: what a replica accepts as the payload of one save. */
export const MAX_ACTIVITY_RECORD_BYTES = HEADER_BYTES + 4 * MAX_ACTIVITY_EXTENTS;
const FLAG_ALL = 1;

/** The payload of a save on the replica protocol (the epoch travels with the connection). */
export function encodeActivityLog(log: Omit<ActivityLogRecord, "epoch">): Buffer {
  const extents = log.all ? [] : log.extents;
  if (extents.length > MAX_ACTIVITY_EXTENTS) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `activity log of ${extents.length} extents (most ${MAX_ACTIVITY_EXTENTS})`,
    });
  }
  const buf = Buffer.alloc(HEADER_BYTES + 4 * extents.length);
  buf.writeBigUInt64BE(BigInt(log.sequence), 0);
  buf.writeUInt32BE(log.extentBytes, 8);
  buf.writeUInt32BE(log.all ? FLAG_ALL : 0, 12);
  buf.writeUInt32BE(extents.length, 16);
  for (const [i, e] of extents.entries()) buf.writeUInt32BE(e, HEADER_BYTES + 4 * i);
  return buf;
}

function malformed(detail: string): KeelsonError {
  return new KeelsonError({ code: "INVALID_ARGUMENT", message: `malformed activity log: ${detail}` });
}

/** Decodes and checks a save's payload; INVALID_ARGUMENT when it is not one this engine would send. */
export function decodeActivityLog(buf: Buffer, epoch: number): ActivityLogRecord {
  if (buf.length < HEADER_BYTES || buf.length > MAX_ACTIVITY_RECORD_BYTES) throw malformed(`${buf.length} bytes`);
  const sequence = Number(buf.readBigUInt64BE(0));
  const extentBytes = buf.readUInt32BE(8);
  const flags = buf.readUInt32BE(12);
  const count = buf.readUInt32BE(16);
  if (!Number.isSafeInteger(sequence) || sequence < 1) throw malformed(`sequence ${sequence}`);
  if (extentBytes < 4096 || (extentBytes & (extentBytes - 1)) !== 0) throw malformed(`extent size ${extentBytes}`);
  if ((flags & ~FLAG_ALL) !== 0) throw malformed(`flags 0x${flags.toString(16)}`);
  const all = (flags & FLAG_ALL) !== 0;
  if (buf.length !== HEADER_BYTES + 4 * count || (all && count !== 0)) throw malformed(`${count} extents in ${buf.length} bytes`);
  const extents: number[] = [];
  for (let i = 0; i < count; i++) {
    const e = buf.readUInt32BE(HEADER_BYTES + 4 * i);
    if (i > 0 && e <= (extents[i - 1] as number)) throw malformed("extents not ascending");
    extents.push(e);
  }
  return { epoch, sequence, extentBytes, all, extents };
}

/** True when `next` may replace `current`: a newer epoch, or a later save of the same one. */
export function supersedes(next: ActivityLogRecord, current: ActivityLogRecord | undefined): boolean {
  if (!current) return true;
  return next.epoch > current.epoch || (next.epoch === current.epoch && next.sequence > current.sequence);
}
