import assert from "node:assert/strict";
import { KeelsonError } from "@keelson/sdk";
import { asWireError } from "../nbd/errno.js";
import type { AllocationRun, NbdExport } from "../nbd/export.js";
import { Command } from "../nbd/protocol.js";

/** What a frontend does with one replica: the NBD ReplicaClient for a peer's, a LocalReplica for its own node's. */
export interface ReplicaIo {
  readonly sizeBytes: number;
  /**
   * Reads `length` bytes at `offset`. With `into` (exactly `length` bytes) the
   * data is read into it, and `into` is what the promise resolves with: no
   * buffer is allocated (a rebuild reuses its region buffers, a frontend reads
   * straight into its NBD reply). Until the promise settles the caller must
   * not use `into`; after a failure its content is undefined.
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  zero(offset: number, length: number, trim: boolean, noHole: boolean, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  /**
   * Which runs from `offset` hold data and which are holes (read as zeros),
   * at most `maxRuns` covering at most `length` bytes; all data where the
   * replica cannot tell (a peer that did not offer base:allocation).
   */
  blockStatus(offset: number, length: number, maxRuns: number): Promise<AllocationRun[]>;
  /** Keeps the frontend's write-intent log (an encoded ActivityLogRecord) with the replica, durably. */
  saveActivity(payload: Buffer): Promise<void>;
  close(): void;
}

/**
 * Opens this node's replica volume `VOLUME#EPOCH` in-process; null when it
 * does not exist or was fenced past that epoch. The engine injects it (the
 * pipeline's local volume target), so this module does not depend on the
 * pipeline that serves replicated volumes.
 */
export type OpenLocalExport = (exportName: string) => NbdExport | null;

/**
 * The replica on the frontend's own node, reached through the same stages
 * (the replica side's epoch fence, the replica volume's QoS state, the
 * store) an NBD connection would get, but in-process: no socket, no framing,
 * no copies through the kernel. A local disk that stalls stalls this node's
 * frontend anyway, so there is no per-request deadline here.
 */
export class LocalReplica implements ReplicaIo {
  readonly #export: NbdExport;
  #closed = false;

  private constructor(exp: NbdExport) {
    this.#export = exp;
  }

  static open(open: OpenLocalExport, exportName: string): LocalReplica {
    const exp = open(exportName);
    if (!exp) {
      throw new KeelsonError({ code: "UNAVAILABLE", message: `local replica ${exportName}: no such export (or fenced past it)` });
    }
    return new LocalReplica(exp);
  }

  get sizeBytes(): number {
    return this.#export.sizeBytes;
  }

  /** Runs one request on the export, and reports its latency to it as an NBD connection would. */
  #run(command: number, start: (cb: (error: KeelsonError | null) => void) => void): Promise<void> {
    if (this.#closed) return Promise.reject(new KeelsonError({ code: "UNAVAILABLE", message: "local replica closed" }));
    const exp = this.#export;
    const startedMs = performance.now();
    return new Promise((resolve, reject) => {
      const done = (error: KeelsonError | null): void => {
        exp.observe?.(command, performance.now() - startedMs);
        if (error) reject(error);
        else resolve();
      };
      try {
        start(done);
      } catch (error) {
        // Counted as started by the export: it must be observed as ended too, or its in-flight count never drops.
        done(asWireError(error));
      }
    });
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = intoOrNew(length, into);
    await this.#run(Command.READ, (cb) => this.#export.read(offset, length, buf, 0, cb));
    return buf;
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.#run(Command.WRITE, (cb) => this.#export.write(offset, data, fua, cb));
  }

  zero(offset: number, length: number, trim: boolean, noHole: boolean, fua: boolean): Promise<void> {
    return this.#run(trim ? Command.TRIM : Command.WRITE_ZEROES, (cb) =>
      this.#export.zero(offset, length, { trim, noHole, fua }, cb),
    );
  }

  flush(): Promise<void> {
    return this.#run(Command.FLUSH, (cb) => this.#export.flush(cb));
  }

  blockStatus(offset: number, length: number, maxRuns: number): Promise<AllocationRun[]> {
    const exp = this.#export;
    if (this.#closed) return Promise.reject(new KeelsonError({ code: "UNAVAILABLE", message: "local replica closed" }));
    if (!exp.blockStatus) return Promise.resolve([{ lengthBytes: length, status: "data" }]);
    return new Promise((resolve, reject) =>
      exp.blockStatus?.(offset, length, maxRuns, (error, runs) => (error || !runs ? reject(error) : resolve([...runs]))),
    );
  }

  saveActivity(payload: Buffer): Promise<void> {
    const save = this.#export.saveActivity;
    if (!save)
      return Promise.reject(new KeelsonError({ code: "INTERNAL", message: `${this.#export.name}: not a replica export` }));
    return this.#run(Command.KEELSON_ACTIVITY, (cb) => save.call(this.#export, payload, cb));
  }

  /** Releases the export handle. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#export.close();
  }
}

/** `into` when given (asserted to be exactly `length` bytes: another size is a caller's bug), else a new buffer of `length`. */
export function intoOrNew(length: number, into: Buffer | undefined): Buffer {
  if (into === undefined) return Buffer.allocUnsafe(length);
  assert.equal(into.length, length, `a read of ${length} bytes into a buffer of ${into.length}`);
  return into;
}
