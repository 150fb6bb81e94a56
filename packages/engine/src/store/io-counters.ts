/**
 * What clients asked of one volume or snapshot through its exports, counted
 * as requests arrive (plain number fields: the request path pays an add, no
 * allocation). Served from memory, reset when the daemon starts; /metrics
 * shows them as counters.
 */
export class IoCounters {
  /** READ requests and the bytes they asked for. */
  readOps = 0;
  readBytes = 0;
  /** WRITE requests and their payload bytes. */
  writeOps = 0;
  writeBytes = 0;
  /** WRITE_ZEROES and TRIM requests. */
  zeroOps = 0;
  flushOps = 0;
  /** BLOCK_STATUS queries (answered from metadata, no disk I/O). */
  blockStatusOps = 0;
}
