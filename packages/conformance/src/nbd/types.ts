// The NBD client's contract (nbd/client.ts): a plain NBD client with many
// requests in flight, used by the ledger writer and the snapshot checks.

/** A reply's outcome: 0 or the NBD error number the server sent; "closed" when the connection died first. */
export type NbdReplyError = number | "closed";

/** One open NBD connection. */
export interface NbdConnection {
  /** Export size in bytes (from the handshake). */
  readonly sizeBytes: number;
  /** True once the socket is closed (by either side). */
  readonly closed: boolean;
  /** Resolves with 0 on success, the NBD error or "closed"; never rejects. */
  write(offsetBytes: number, data: Buffer, options?: { fua?: boolean }): Promise<NbdReplyError>;
  /** Resolves with the data, or the error. Never rejects. */
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer | { error: NbdReplyError }>;
  flush(): Promise<NbdReplyError>;
  /** Sends NBD_CMD_DISC and closes. Idempotent. */
  close(): void;
}
