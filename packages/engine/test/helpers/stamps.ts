import { NbdTestClient } from "./nbd-client.js";

/** Unit of the replication tests' writes. */
export const CHUNK = 64 * 1024;
const MIB = 1024 * 1024;

/** A chunk filled with `id` (big-endian u64, repeated): a torn write shows as a mix of ids. */
export function stamp(id: number): Buffer {
  const b = Buffer.alloc(CHUNK);
  for (let at = 0; at < CHUNK; at += 8) b.writeBigUInt64BE(BigInt(id), at);
  return b;
}

/** The first `sizeBytes` of export `name` on `address`, in 4 MiB requests. */
export async function readAll(address: string, name: string, sizeBytes: number): Promise<Buffer> {
  const c = await NbdTestClient.open(address, name);
  const parts: Buffer[] = [];
  for (let at = 0; at < sizeBytes; at += 4 * MIB) {
    const r = await c.read(at, Math.min(4 * MIB, sizeBytes - at));
    if (r.error !== 0) throw new Error(`read of ${name} at ${at} failed with NBD error ${r.error}`);
    parts.push(r.data);
  }
  await c.disconnect();
  return Buffer.concat(parts);
}
