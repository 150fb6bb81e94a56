import assert from "node:assert";
import fs from "node:fs";
import os from "node:os";
import { sysBlockDir } from "../util/block-device.js";
import { messageOf } from "../util/errors.js";
import {
  type DeviceIo,
  DeviceIoError,
  DIRECT_ALIGN_BYTES,
  type DirectOpen,
  type RwCallback,
  type SyncCallback,
} from "./device-io.js";
import type { RingHandle, UringAddon } from "./uring-addon.js";

/** Requests in the kernel at once (the ring's submission queue; its completion queue is twice that). */
export const URING_CAPACITY = 512;
/**
 * Reads and writes waiting for a free place in the ring; past this, one fails
 * with EAGAIN. Callers bound their own queues well below: this only stops a
 * runaway caller from growing the queue without end. Flushes are never
 * refused here (see {@link UringIo}).
 */
export const MAX_WAITING = 2 ** 20;

/** A buffered write of at most this many bytes is written at once on the event loop (see `UringIo.write`). */
export const INLINE_WRITE_MAX_BYTES = 64 * 1024;
/**
 * An inline write that took longer than this stops inline writes for a
 * while: the kernel may be throttling writers (its pauses are 10 ms and up),
 * or the loop lost its core for a time slice (a few ms on a busy 2-core
 * machine). The pause starts at {@link INLINE_WRITE_BACKOFF_MIN_MS} and
 * doubles while the next inline write is slow too, up to
 * {@link INLINE_WRITE_BACKOFF_MAX_MS}: a lost time slice costs a tenth of a
 * second of inline writes, a throttled page cache one stalled write every
 * two seconds.
 */
const INLINE_WRITE_SLOW_MS = 4;
const INLINE_WRITE_BACKOFF_MIN_MS = 100;
const INLINE_WRITE_BACKOFF_MAX_MS = 2000;

/** Submits per turn of the event loop made at once (a microtask); more wait for the next turn (see `UringIo.#scheduleSubmit`). */
const MAX_SUBMITS_PER_TURN = 64;

const READ = 0;
const WRITE = 1;
const SYNC = 2;
type Op = typeof READ | typeof WRITE | typeof SYNC;

const { EAGAIN, EBUSY, EINTR, EBADF } = os.constants.errno;

interface Waiting {
  op: Op;
  fd: number;
  buffer: Buffer | null;
  offset: number;
  length: number;
  position: number;
  cb: RwCallback | SyncCallback;
}

/**
 * Disk I/O through io_uring. Requests made during one event-loop turn reach
 * the kernel in one submission (from a microtask); completions come back on
 * the event loop, all that are waiting in one call. A request holds a token
 * (a slot in the ring) from its submission to its completion; with every token
 * taken, requests wait in order. Buffers are referenced by their token until
 * the kernel is done with them. With `maxWaiting` requests waiting, a read or
 * write fails with EAGAIN; a flush is never refused for a full queue.
 */
export class UringIo implements DeviceIo {
  readonly engine = "io_uring";
  readonly #addon: UringAddon;
  readonly #ring: RingHandle;
  readonly #results: Int32Array;
  readonly #ops: Uint8Array;
  readonly #callbacks: Array<RwCallback | SyncCallback | undefined>;
  readonly #buffers: Array<Buffer | null>;
  readonly #free: number[] = [];
  readonly #waiting: Waiting[] = [];
  #waitingHead = 0;
  /** Reads and writes may wait only while fewer than this many requests wait. */
  readonly #maxWaiting: number;
  /** Tokens taken: requests prepared or in the kernel. */
  #taken = 0;
  /** Requests prepared and not yet handed to the kernel. */
  #prepared = 0;
  #submitScheduled = false;
  #closed = false;
  /** fds opened with O_DIRECT ({@link openDirect}) and the alignment their requests get. */
  readonly #direct = new Map<number, number>();
  /** Largest buffered write made inline; 0: none (see {@link write}). */
  readonly #inlineWriteMaxBytes: number;
  /** performance.now() before which no write is made inline (one was slow), and how long the last such pause was. */
  #inlineWritesFrom = 0;
  #inlinePauseMs = 0;
  /** Submits scheduled in this turn of the event loop (see `#scheduleSubmit`). */
  #submitsThisTurn = 0;
  readonly #newTurn = (): void => {
    this.#submitsThisTurn = 0;
  };

  constructor(
    addon: UringAddon,
    capacity = URING_CAPACITY,
    maxWaiting = MAX_WAITING,
    inlineWriteMaxBytes = INLINE_WRITE_MAX_BYTES,
  ) {
    assert(Number.isInteger(maxWaiting) && maxWaiting >= 0, `maxWaiting must be a whole number >= 0, got ${maxWaiting}`);
    this.#addon = addon;
    this.#inlineWriteMaxBytes = inlineWriteMaxBytes;
    this.#maxWaiting = maxWaiting;
    this.#results = new Int32Array(2 * capacity);
    this.#ops = new Uint8Array(capacity);
    this.#callbacks = new Array(capacity).fill(undefined);
    this.#buffers = new Array(capacity).fill(null);
    for (let t = capacity - 1; t >= 0; t--) this.#free.push(t);
    this.#ring = addon.open(capacity, (count) => this.#completed(count), this.#results);
  }

  get inFlight(): number {
    return this.#taken + this.#waiting.length - this.#waitingHead;
  }

  read(fd: number, buffer: Buffer, offset: number, length: number, position: number, cb: RwCallback): void {
    this.#request(READ, fd, buffer, offset, length, position, cb);
  }

  /**
   * A buffered write never completes inside io_uring's submit on ext4 or a
   * block device (no non-blocking buffered writes there): the kernel hands it
   * to a worker thread, whose completion then wakes the event loop, two thread
   * hand-offs for a copy into the page cache. Under load those workers queue
   * behind each other and compete for the CPU with everything else: on 2
   * cores a 4 KiB write spent 0.4-1 ms there, so a volume doing random
   * read/write at queue depth 32 was held to its share of them whatever the
   * schedulers ordered. A small one is written at once instead, as a server
   * with a thread per connection does, also while other requests are in the
   * ring: it may then finish before a request made earlier, which nothing
   * relies on (every caller waits for a write before anything that depends on
   * it, NBD gives requests in flight together no order, and the workers
   * already finish writes to a block device in any order).
   * One that took more than 4 ms turns this off for a while (see
   * {@link INLINE_WRITE_SLOW_MS}), so a throttled page cache seldom stalls
   * the loop. Inline writes count against the submits a turn may make, so a chain
   * of them still lets the event loop turn.
   */
  write(fd: number, buffer: Buffer, offset: number, length: number, position: number, cb: RwCallback): void {
    if (
      length <= this.#inlineWriteMaxBytes &&
      !this.#closed &&
      !this.#direct.has(fd) &&
      this.#submitsThisTurn < MAX_SUBMITS_PER_TURN
    ) {
      const started = performance.now();
      if (started >= this.#inlineWritesFrom) return this.#writeInline(fd, buffer, offset, length, position, cb, started);
    }
    this.#request(WRITE, fd, buffer, offset, length, position, cb);
  }

  #writeInline(
    fd: number,
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
    cb: RwCallback,
    started: number,
  ): void {
    // Counted with the submits: a chain of writes each made from the last one's callback runs on
    // process.nextTick alone, and would starve timers and sockets as a chain of cached reads would.
    if (this.#submitsThisTurn++ === 0) setImmediate(this.#newTurn);
    let n: number;
    try {
      n = fs.writeSync(fd, buffer, offset, length, position);
    } catch (error) {
      const errno = (error as NodeJS.ErrnoException).errno ?? -os.constants.errno.EIO;
      return failLater(cb, new DeviceIoError(errno, "pwrite"));
    }
    const ended = performance.now();
    if (ended - started > INLINE_WRITE_SLOW_MS) {
      this.#inlinePauseMs = Math.min(INLINE_WRITE_BACKOFF_MAX_MS, Math.max(INLINE_WRITE_BACKOFF_MIN_MS, 2 * this.#inlinePauseMs));
      this.#inlineWritesFrom = ended + this.#inlinePauseMs;
    } else this.#inlinePauseMs = 0;
    process.nextTick(cb, null, n);
  }

  fdatasync(fd: number, cb: SyncCallback): void {
    this.#request(SYNC, fd, null, 0, 0, 0, cb);
  }

  openDirect(path: string): DirectOpen {
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_DIRECT);
    } catch (error) {
      // EINVAL: the filesystem refuses O_DIRECT (tmpfs).
      return { fd: null, why: `${path} cannot be opened with O_DIRECT: ${messageOf(error)}` };
    }
    const block = logicalBlockBytes(path);
    if (block > DIRECT_ALIGN_BYTES) {
      fs.closeSync(fd);
      return {
        fd: null,
        why: `${path} has ${block}-byte logical blocks, more than the ${DIRECT_ALIGN_BYTES} O_DIRECT aligns to`,
      };
    }
    this.#direct.set(fd, DIRECT_ALIGN_BYTES);
    const close = (): void => {
      // Forgotten first: the number may name another file once closed.
      if (this.#direct.delete(fd)) fs.closeSync(fd);
    };
    return { fd, close, why: null };
  }

  close(): void {
    if (this.#closed) return;
    if (this.inFlight > 0) throw new DeviceIoError(EBUSY, "io_uring close", `${this.inFlight} request(s) in flight`);
    const rc = this.#addon.close(this.#ring);
    if (rc < 0) throw new DeviceIoError(rc, "io_uring close");
    this.#closed = true;
  }

  #request(
    op: Op,
    fd: number,
    buffer: Buffer | null,
    offset: number,
    length: number,
    position: number,
    cb: RwCallback | SyncCallback,
  ): void {
    if (this.#closed) return failLater(cb, new DeviceIoError(EBADF, opName(op), "the io_uring engine is closed"));
    // In order: nothing overtakes a request already waiting.
    if (this.#free.length > 0 && this.#waitingHead === this.#waiting.length) {
      this.#start(op, fd, buffer, offset, length, position, cb);
      return;
    }
    // A failed fdatasync fails the pool until restart, and a queue full in our
    // own code is no disk error: a flush always waits its turn. Flushes stay
    // few without a limit here: the store's metadata writer runs one commit,
    // so at most one flush, at a time per pool.
    if (op !== SYNC && this.#waiting.length - this.#waitingHead >= this.#maxWaiting)
      return failLater(cb, new DeviceIoError(EAGAIN, opName(op), `${this.#maxWaiting} requests already wait for the ring`));
    this.#waiting.push({ op, fd, buffer, offset, length, position, cb });
  }

  #start(
    op: Op,
    fd: number,
    buffer: Buffer | null,
    offset: number,
    length: number,
    position: number,
    cb: RwCallback | SyncCallback,
  ): void {
    const token = this.#free.pop() as number;
    let rc: number;
    if (op === SYNC) rc = this.#addon.fdatasync(this.#ring, fd, token);
    else if (op === READ)
      rc = this.#addon.read(this.#ring, fd, buffer as Buffer, offset, length, position, token, this.#direct.get(fd) ?? 0);
    else rc = this.#addon.write(this.#ring, fd, buffer as Buffer, offset, length, position, token, this.#direct.get(fd) ?? 0);
    if (rc < 0) {
      // The ring refused this one request: it fails alone and its token goes back.
      this.#free.push(token);
      failLater(cb, new DeviceIoError(rc, opName(op)));
      return;
    }
    this.#ops[token] = op;
    this.#callbacks[token] = cb;
    this.#buffers[token] = buffer;
    this.#taken++;
    this.#prepared++;
    this.#scheduleSubmit();
  }

  #scheduleSubmit(): void {
    if (this.#submitScheduled) return;
    this.#submitScheduled = true;
    // Within this turn of the loop (a microtask) while few submits ran in it; past that, on the next
    // turn. A chain of requests that each complete inside their submit (a sequential read loop over
    // cached data) would otherwise run on microtasks alone and starve timers and sockets.
    if (this.#submitsThisTurn === 0) setImmediate(this.#newTurn);
    if (this.#submitsThisTurn++ < MAX_SUBMITS_PER_TURN) queueMicrotask(this.#submit);
    else setImmediate(this.#submit);
  }

  readonly #submit = (): void => {
    this.#submitScheduled = false;
    if (this.#prepared === 0 || this.#closed) return;
    const n = this.#addon.submit(this.#ring);
    if (n > 0) this.#prepared -= n;
    // Whether the kernel left part of this batch, read before the completions below: their callbacks
    // may prepare new requests, which schedule a submit of their own.
    const partial = this.#prepared > 0;
    if (n > 0) this.#reapNow();
    if (partial && !this.#submitScheduled) {
      // The kernel took part of the batch, or was short of resources (EAGAIN, EBUSY, EINTR): try again next turn.
      assert(n >= 0 || n === -EAGAIN || n === -EBUSY || n === -EINTR, `io_uring submit failed: errno ${-n}`);
      this.#submitScheduled = true;
      setImmediate(this.#submit);
    }
  };

  /**
   * Completes at once what the kernel finished inside the submit (reads the page cache answered, writes
   * it took): they need not wait for the event loop to come round to the eventfd. Their callbacks run
   * after the code that made the requests returned (the submit is a microtask), as on the loop.
   */
  #reapNow(): void {
    const capacity = this.#ops.length;
    for (;;) {
      const done = this.#addon.reapNow(this.#ring);
      if (done > 0) this.#completed(done);
      if (done < capacity || this.#closed) return;
    }
  }

  #completed(count: number): void {
    let thrown: { error: unknown } | null = null;
    for (let i = 0; i < count; i++) {
      const token = this.#results[2 * i] as number;
      const result = this.#results[2 * i + 1] as number;
      const op = this.#ops[token] as Op;
      const cb = this.#callbacks[token];
      assert(cb !== undefined, `io_uring completion for a free token ${token}`);
      this.#callbacks[token] = undefined;
      this.#buffers[token] = null;
      this.#free.push(token);
      this.#taken--;
      // A callback that throws must not lose the rest of the batch: it is rethrown once all are done.
      try {
        const error = result < 0 ? new DeviceIoError(result, opName(op)) : null;
        if (op === SYNC) (cb as SyncCallback)(error);
        else (cb as RwCallback)(error, Math.max(result, 0));
      } catch (error) {
        thrown ??= { error };
      }
    }
    this.#startWaiting();
    if (thrown) throw thrown.error;
  }

  #startWaiting(): void {
    while (this.#free.length > 0 && this.#waitingHead < this.#waiting.length) {
      const w = this.#waiting[this.#waitingHead] as Waiting;
      this.#waiting[this.#waitingHead++] = undefined as unknown as Waiting;
      this.#start(w.op, w.fd, w.buffer, w.offset, w.length, w.position, w.cb);
    }
    if (this.#waitingHead === this.#waiting.length) {
      this.#waiting.length = 0;
      this.#waitingHead = 0;
    } else if (this.#waitingHead > 4096 && this.#waitingHead * 2 > this.#waiting.length) {
      this.#waiting.splice(0, this.#waitingHead);
      this.#waitingHead = 0;
    }
  }
}

/** The logical block size of the block device `path` is, or 512 for a file (its filesystem's device decides; 512 and 4096 both fit the 4 KiB alignment). */
function logicalBlockBytes(path: string): number {
  const stat = fs.statSync(path);
  if (!stat.isBlockDevice()) return 512;
  const dir = sysBlockDir(stat.rdev);
  // A partition has no queue/ of its own: its disk's (the parent directory) applies.
  for (const file of [`${dir}/queue/logical_block_size`, `${dir}/../queue/logical_block_size`]) {
    try {
      const n = Number(fs.readFileSync(file, "utf8").trim());
      if (n > 0) return n;
    } catch {}
  }
  return 512;
}

function opName(op: Op): string {
  return op === READ ? "pread" : op === WRITE ? "pwrite" : "fdatasync";
}

function failLater(cb: RwCallback | SyncCallback, error: DeviceIoError): void {
  process.nextTick(() => (cb as RwCallback)(error, 0));
}
