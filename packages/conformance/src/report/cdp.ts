// A minimal Chrome DevTools Protocol client over --remote-debugging-pipe:
// Chromium reads commands on its fd 3 and writes replies and events on fd 4,
// each a JSON object terminated by a NUL byte. No dependency, no WebSocket.

import type { Readable, Writable } from "node:stream";
import { ConformanceError } from "../errors.js";

/** A reply or event bigger than this is a protocol error; full-page screenshots stay well below. */
export const MAX_CDP_MESSAGE_BYTES = 64 * 1024 * 1024;

/** A CDP event as delivered: its method, params and, for a page, the session it came from. */
export interface CdpEvent {
  method: string;
  params: Record<string, unknown>;
  sessionId?: string;
}

interface Pending {
  method: string;
  resolve(result: Record<string, unknown>): void;
  reject(error: Error): void;
}

interface CdpMessage {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { code: number; message: string };
  sessionId?: string;
}

/**
 * One connection to a browser. Commands are answered in any order and matched
 * by id; events go to the listeners. After {@link CdpConnection.fail} every
 * pending and later command rejects with that error.
 */
export class CdpConnection {
  /** Commands sent and not yet answered, by id; at most one per awaiting caller. */
  private readonly pending = new Map<number, Pending>();
  /** Bytes received after the last NUL: the start of the next message. */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private nextId = 1;
  private failure: Error | undefined;
  private readonly listeners: ((event: CdpEvent) => void)[] = [];

  constructor(
    private readonly toBrowser: Writable,
    fromBrowser: Readable,
  ) {
    fromBrowser.on("data", (chunk: Buffer) => this.receive(chunk));
    fromBrowser.on("error", (error: Error) => this.fail(error));
    // EPIPE when the browser is gone; the exit handler reports why.
    toBrowser.on("error", (error: Error) => this.fail(error));
  }

  /** Calls `listener` for every event; there is no unsubscribe, a connection lives for one page render. */
  onEvent(listener: (event: CdpEvent) => void): void {
    this.listeners.push(listener);
  }

  /** Sends a command; resolves with its result, rejects with TOOL_FAILED on a protocol error. */
  send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const id = this.nextId++;
    const message = sessionId === undefined ? { id, method, params } : { id, method, params, sessionId };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { method, resolve, reject });
      this.toBrowser.write(`${JSON.stringify(message)}\0`);
    });
  }

  /** Rejects every pending command with `error` and refuses new ones; the first failure wins. */
  fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }

  private receive(chunk: Buffer): void {
    let start = 0;
    for (let nul = chunk.indexOf(0, start); nul !== -1; nul = chunk.indexOf(0, start)) {
      this.partial.push(chunk.subarray(start, nul));
      const text = Buffer.concat(this.partial).toString("utf8");
      this.partial = [];
      this.partialBytes = 0;
      start = nul + 1;
      this.dispatch(text);
    }
    if (start < chunk.length) {
      this.partial.push(chunk.subarray(start));
      this.partialBytes += chunk.length - start;
      if (this.partialBytes > MAX_CDP_MESSAGE_BYTES) {
        this.fail(
          new ConformanceError({
            code: "TOOL_FAILED",
            message: `chromium sent a DevTools message over ${MAX_CDP_MESSAGE_BYTES} bytes`,
          }),
        );
        this.partial = [];
        this.partialBytes = 0;
      }
    }
  }

  private dispatch(text: string): void {
    let message: CdpMessage;
    try {
      message = JSON.parse(text) as CdpMessage;
    } catch (cause) {
      this.fail(
        new ConformanceError({
          code: "TOOL_FAILED",
          message: `chromium sent a DevTools message that is not JSON: ${text.slice(0, 200)}`,
          cause,
        }),
      );
      return;
    }
    if (message.id !== undefined) {
      const pending = this.pending.get(message.id);
      if (pending === undefined) return;
      this.pending.delete(message.id);
      if (message.error !== undefined) {
        pending.reject(
          new ConformanceError({ code: "TOOL_FAILED", message: `chromium: ${pending.method} failed: ${message.error.message}` }),
        );
      } else {
        pending.resolve(message.result ?? {});
      }
      return;
    }
    if (message.method !== undefined) {
      const event: CdpEvent = { method: message.method, params: message.params ?? {}, sessionId: message.sessionId };
      for (const listener of this.listeners) listener(event);
    }
  }
}
