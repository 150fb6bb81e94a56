// The acknowledged-write ledger: a writer that records every write and flush
// it sends over NBD, and a verifier that proves no required write was lost.

export { BLOCK_BYTES, type BlockStamp, type ParsedBlock, parseBlock, stampBlock } from "./block.js";
export {
  type BlockHistory,
  type FlushRecord,
  Ledger,
  type LedgerCounts,
  MAX_RETAINED_WRITES,
  type WriteOutcome,
  type WriteRecord,
} from "./ledger.js";
export type { AckSeries } from "./timeline.js";
export {
  MAX_EXAMPLES,
  type ReadFunction,
  VERIFY_CHUNK_BYTES,
  type VerifyMode,
  type VerifyResult,
  verifyLedger,
} from "./verify.js";
export {
  type ConnectionState,
  LedgerWriter,
  type LedgerWriterOptions,
  MAX_RECONNECT_ATTEMPTS,
  type WriterCounts,
} from "./writer.js";
