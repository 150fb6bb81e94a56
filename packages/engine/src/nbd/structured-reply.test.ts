import { describe, expect, it } from "vitest";
import {
  CHUNK_HEADER_BYTES,
  ERROR_PREFIX_BYTES,
  errorChunk,
  formatErrorMessage,
  isErrorChunk,
  MAX_ERROR_MESSAGE_BYTES,
  parseErrorMessage,
  parseErrorPayload,
  ReplyFlag,
  ReplyType,
  STRUCTURED_REPLY_MAGIC,
} from "./structured-reply.js";

describe("structured reply error chunks", () => {
  it("an error chunk carries the handle, the errno and `CODE: detail`, and reads back to the same code", () => {
    const chunk = errorChunk(0x01020304, 0x05060708, 1, "EPOCH_STALE", "volume v1 is fenced at epoch 3");
    expect(chunk.readUInt32BE(0)).toBe(STRUCTURED_REPLY_MAGIC);
    expect(chunk.readUInt16BE(4)).toBe(ReplyFlag.DONE);
    expect(chunk.readUInt16BE(6)).toBe(ReplyType.ERROR);
    expect(chunk.readBigUInt64BE(8)).toBe(0x0102030405060708n);
    expect(chunk.readUInt32BE(16)).toBe(chunk.length - CHUNK_HEADER_BYTES);
    const parsed = parseErrorPayload(chunk.subarray(CHUNK_HEADER_BYTES));
    expect(parsed).toEqual({ errno: 1, message: "EPOCH_STALE: volume v1 is fenced at epoch 3" });
    expect(parseErrorMessage(parsed?.message ?? "")).toBe("EPOCH_STALE");
  });

  it("a message longer than the protocol's 4096-byte limit is cut at a character boundary", () => {
    const chunk = errorChunk(0, 1, 5, "INTERNAL", "é".repeat(3000));
    const length = chunk.readUInt16BE(CHUNK_HEADER_BYTES + 4);
    expect(length).toBeLessThanOrEqual(MAX_ERROR_MESSAGE_BYTES);
    expect(chunk.length).toBe(CHUNK_HEADER_BYTES + ERROR_PREFIX_BYTES + length);
    const message = parseErrorPayload(chunk.subarray(CHUNK_HEADER_BYTES))?.message ?? "";
    expect(message.startsWith("INTERNAL: é")).toBe(true);
    expect(message.includes("\ufffd")).toBe(false);
  });

  it("messages without a keelson code (other servers) name none", () => {
    expect(parseErrorMessage("Operation not permitted")).toBeNull();
    expect(parseErrorMessage("NOT_A_CODE: x")).toBeNull();
    expect(parseErrorMessage("")).toBeNull();
    expect(parseErrorMessage(formatErrorMessage("READ_ONLY", "snapshot s is read-only"))).toBe("READ_ONLY");
  });

  it("a payload claiming a longer message than it holds is rejected", () => {
    const payload = Buffer.alloc(ERROR_PREFIX_BYTES + 3);
    payload.writeUInt32BE(22, 0);
    payload.writeUInt16BE(4, 4);
    expect(parseErrorPayload(payload)).toBeNull();
    expect(parseErrorPayload(Buffer.alloc(5))).toBeNull();
  });

  it("every type with bit 15 set is an error chunk", () => {
    expect(isErrorChunk(ReplyType.ERROR)).toBe(true);
    expect(isErrorChunk(ReplyType.ERROR_OFFSET)).toBe(true);
    expect(isErrorChunk(2 ** 15 + 77)).toBe(true);
    expect(isErrorChunk(ReplyType.OFFSET_DATA)).toBe(false);
  });
});
