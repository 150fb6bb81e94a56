import type { KeelsonError } from "@keelson/sdk";

/** Completion of an export operation. */
export type ExportCallback = (error: KeelsonError | null) => void;

/** A run of bytes in an answer to NBD_CMD_BLOCK_STATUS (base:allocation): data, or a hole that reads as zeros. */
export interface AllocationRun {
  lengthBytes: number;
  status: "data" | "hole";
}

/** Completion of a block status query: the runs on success (null on error). */
export type BlockStatusCallback = (error: KeelsonError | null, runs: readonly AllocationRun[] | null) => void;

/** A connection waiting for its turn to start its next request. */
export interface AdmissionWaiter {
  /** Its turn came: the next request it parses may start. */
  onAdmitted(): void;
}

/**
 * When a connection may start its next request (read its payload, run it,
 * answer it): the daemon's front scheduler, which orders the requests of all
 * connections by their volumes' reservations and weights, so that a flood
 * on other exports cannot take this daemon's CPU from a reserved one.
 */
export interface RequestAdmission {
  /**
   * True: start now. False: `waiter.onAdmitted` runs once it may; a waiter waits for one request at a
   * time. `backlogged`: another request of this connection was received behind this one.
   */
  enter(waiter: AdmissionWaiter, backlogged: boolean): boolean;
  /** Withdraws a waiting waiter (its connection closed); false when it was not waiting. */
  cancel(waiter: AdmissionWaiter): boolean;
}

/**
 * What the NBD server serves: one open export (a volume, later a snapshot or
 * a replicated frontend). Methods call back exactly once.
 */
export interface NbdExport {
  readonly name: string;
  readonly description: string;
  /** Size now; a client sees a grown size when it reconnects. */
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void;
  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void;
  /** WRITE_ZEROES (trim false) or TRIM (trim true). */
  zero(offset: number, length: number, options: { trim: boolean; noHole: boolean; fua: boolean }, cb: ExportCallback): void;
  flush(cb: ExportCallback): void;
  /**
   * NBD_CMD_BLOCK_STATUS for base:allocation: consecutive runs from `offset`,
   * at least one and at most `maxRuns`, covering at most `length` bytes (the
   * client asks again from where they end). Answers from metadata only; a
   * hole must read as zeros. Without it the server answers the whole range as
   * data, which the protocol allows for any block.
   */
  blockStatus?(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void;
  /**
   * Keeps a frontend's write-intent log with this replica (the
   * KEELSON_ACTIVITY command's payload, checked by the export); only
   * replica exports have it. Kept before it calls back, on disk soon after.
   */
  saveActivity?(payload: Buffer, cb: ExportCallback): void;
  /**
   * A request this export ran (READ, WRITE, WRITE_ZEROES, TRIM, FLUSH, ...)
   * completed, `elapsedMs` after it was handed over, successfully or not.
   * Called once per request, after its callback; for latency figures only.
   */
  observe?(command: number, elapsedMs: number): void;
  /** Orders this export's requests with every other's (QoS at the front); without it they start as they arrive. */
  readonly admission?: RequestAdmission;
  /** Releases the handle; called once, after the connection's last request completed. */
  close(): void;
}

/** What NBD_OPT_INFO tells of an export. */
export interface ExportInfo {
  sizeBytes: number;
  readOnly: boolean;
  description: string;
}

/**
 * The exports a server offers one client. Each method may answer at once or
 * later (a replica export is checked against the cluster's metadata); a
 * method that throws refuses the client (a typed error, sent as
 * NBD_REP_ERR_POLICY where the protocol can say so).
 */
export interface ExportCatalog {
  /** Exports for NBD_OPT_LIST, in a stable order. */
  list(): Array<{ name: string; description: string }> | Promise<Array<{ name: string; description: string }>>;
  /** Opens an export by name; null when there is none. */
  open(name: string): NbdExport | null | Promise<NbdExport | null>;
  /** Describes an export without opening it (NBD_OPT_INFO); null when there is none. */
  describe(name: string): ExportInfo | null | Promise<ExportInfo | null>;
}

/** Who is at the other end of an NBD connection, as the server knows it. */
export interface NbdPeer {
  /** "unix": the unix socket (only its owner, root, can connect); "tcp": plain TCP; "tls": TCP under mutual TLS. */
  via: "unix" | "tcp" | "tls";
  /** The remote IP address ("" on a unix socket). */
  address: string;
  /** Under mutual TLS, the subject of the client's certificate (CN, OU) as the server verified it; null otherwise. */
  subject: { cn: string; ou: string } | null;
}

/** The catalog a server offers each client: the same for all, or one chosen by who the client is. */
export type CatalogFor = (peer: NbdPeer) => ExportCatalog;
