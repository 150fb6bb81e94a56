import fs from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { ByteBudget, DEFAULT_NBD_BUFFER_BYTES } from "./byte-budget.js";
import { Connection } from "./connection.js";
import type { CatalogFor, ExportCatalog, NbdPeer } from "./export.js";
import { type NbdTls, negotiate } from "./handshake.js";
import { ReadBufferSocket } from "./read-buffer-socket.js";
import { RequestBuffers } from "./request-buffers.js";

const debug = createDebug("keelson:nbd");

/** A client must pick an export within this time or it is disconnected. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Connections one server accepts at once; more are refused at accept. */
export const MAX_CONNECTIONS = 1024;

/**
 * Mutual TLS from the first byte (the replica protocol between engines): the server's certificate and
 * key, and the CA every client's certificate must chain to. PEM contents.
 */
export interface NbdMutualTls {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/** Where an NBD server listens. */
export interface NbdListenOptions {
  /** `host:port` (port 0 picks a free one); omitted for no TCP listener. */
  tcp?: string;
  /** Path of a unix socket; omitted for none. */
  unixSocket?: string;
  /**
   * TLS of the TCP listener: clients must negotiate NBD_OPT_STARTTLS. The unix socket stays plaintext (only
   * this host reaches it, guarded by its file permissions), and answers STARTTLS with NBD_REP_ERR_POLICY.
   */
  tls?: NbdTls;
}

function parseHostPort(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(":");
  const host = address.slice(0, at).replace(/^\[|\]$/g, "");
  const port = Number(address.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `invalid listen address ${JSON.stringify(address)}: use host:port`,
    });
  }
  return { host, port };
}

function listen(server: net.Server, target: { host: string; port: number } | string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    const done = (): void => {
      server.off("error", reject);
      resolve();
    };
    if (typeof target === "string") server.listen(target, done);
    else server.listen(target.port, target.host, done);
  });
}

/** The subject of a verified client certificate, or null. */
function subjectOf(socket: tls.TLSSocket): NbdPeer["subject"] {
  const subject = socket.getPeerCertificate().subject;
  const pick = (v: string | string[] | undefined): string => (Array.isArray(v) ? (v[0] ?? "") : (v ?? ""));
  return subject ? { cn: pick(subject.CN), ou: pick(subject.OU) } : null;
}

/** Settings of an NBD server. */
export interface NbdServerOptions {
  /** Bytes of request payloads and reply buffers all connections may hold at once (default {@link DEFAULT_NBD_BUFFER_BYTES}). */
  bufferBytes?: number;
  /** Mutual TLS on the TCP listener (the replica protocol). */
  mutualTls?: NbdMutualTls;
}

/**
 * Serves an export catalog over NBD on TCP and/or a unix socket. The catalog
 * may be chosen per client (by how and from where it connects); with
 * `mutualTls` the TCP listener takes only clients whose certificate the CA signed.
 */
export class NbdServer {
  readonly #catalogFor: CatalogFor;
  readonly #tls: NbdMutualTls | null;
  /**
   * Shared by every connection: what bounds the memory clients can make this server hold. The replica
   * protocol has a server (and so a budget) of its own: a frontend's requests hold its node's application
   * budget while they wait for replicas on other nodes, so if replica traffic waited on that budget too,
   * two nodes replicating to each other could each wait for the other.
   */
  readonly #budget: ByteBudget;
  /** READ reply buffers, reused across this server's connections. */
  readonly #replies = new RequestBuffers();
  readonly #servers: net.Server[] = [];
  /** Live connections in the transmission phase, by export name. */
  readonly #connections = new Map<string, Set<Connection>>();
  /** Sockets not yet past the handshake. */
  readonly #handshaking = new Set<net.Socket>();
  /** Waiters for the connections of an export to be gone. */
  readonly #closeWaiters = new Map<string, Array<() => void>>();
  /** Who waits for a closing connection to be gone (a new connection to its export, see `#accept`). */
  readonly #forgotten = new Map<Connection, Array<() => void>>();
  #tcpAddress = "";
  #unixSocket = "";
  #count = 0;

  constructor(catalog: ExportCatalog | CatalogFor, options: NbdServerOptions = {}) {
    this.#catalogFor = typeof catalog === "function" ? catalog : () => catalog;
    this.#tls = options.mutualTls ?? null;
    this.#budget = new ByteBudget(options.bufferBytes ?? DEFAULT_NBD_BUFFER_BYTES);
  }

  /** Bytes of request payloads and reply buffers held now, all connections together. */
  get bufferedBytes(): number {
    return this.#budget.usedBytes;
  }

  /** The budget's limit: `bufferedBytes` stays under it, a single larger request aside. */
  get bufferLimitBytes(): number {
    return this.#budget.limitBytes;
  }

  /** `host:port` of the TCP listener, or "". */
  get tcpAddress(): string {
    return this.#tcpAddress;
  }

  /** Path of the unix socket, or "". */
  get unixSocket(): string {
    return this.#unixSocket;
  }

  async listen(options: NbdListenOptions): Promise<void> {
    if (options.tcp) {
      const server = this.#newServer(this.#tls ? "tls" : "tcp", options.tls);
      await listen(server, parseHostPort(options.tcp));
      const addr = server.address() as net.AddressInfo;
      this.#tcpAddress = addr.family === "IPv6" ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`;
    }
    if (options.unixSocket) {
      fs.rmSync(options.unixSocket, { force: true });
      await listen(this.#newServer("unix"), options.unixSocket);
      this.#unixSocket = options.unixSocket;
    }
  }

  #newServer(via: NbdPeer["via"], starttls?: NbdTls): net.Server {
    const server =
      via === "tls" && this.#tls
        ? tls.createServer({ ...this.#tls, requestCert: true, rejectUnauthorized: true }, (socket) =>
            this.#accept(socket, { via, address: socket.remoteAddress ?? "", subject: subjectOf(socket) }, undefined),
          )
        : starttls
          ? net.createServer((socket) =>
              this.#accept(socket, { via, address: socket.remoteAddress ?? "", subject: null }, starttls),
            )
          : // Plaintext for good: the connection reads into the shared read buffer (a TLS socket reads through its handle).
            net.createServer({ pauseOnConnect: true }, (accepted) => {
              const input = ReadBufferSocket.adopt(accepted);
              const address = via === "unix" ? "" : (input.socket.remoteAddress ?? "");
              this.#accept(input.socket, { via, address, subject: null }, undefined, input);
            });
    // A client that fails the TLS handshake (no certificate, another CA) never reaches the catalog.
    server.on("tlsClientError", (e: Error) => debug("TLS handshake refused: %s", e.message));
    server.maxConnections = MAX_CONNECTIONS;
    this.#servers.push(server);
    return server;
  }

  #accept(socket: net.Socket, peer: NbdPeer, starttls: NbdTls | undefined, input: ReadBufferSocket | null = null): void {
    this.#handshaking.add(socket);
    socket.on("error", (e) => debug("socket error during handshake: %s", e.message));
    const timer = setTimeout(() => socket.destroy(), HANDSHAKE_TIMEOUT_MS);
    negotiate(socket, this.#catalogFor(peer), starttls).then(async (result) => {
      clearTimeout(timer);
      if (!result) {
        this.#handshaking.delete(socket);
        socket.end();
        socket.destroySoon();
        return;
      }
      const name = result.export.name;
      // A connection to this export that is closing may still have writes running (its client gave
      // up on them: a frontend that timed a replica out and now opens it again). The new one starts
      // once they ended, or a write acknowledged on it could be overwritten by one of them.
      const draining = [...(this.#connections.get(name) ?? [])].filter((c) => c.closing && c.inflight > 0);
      if (draining.length > 0) {
        result.socket.pause();
        const drained = await this.#drained(draining, HANDSHAKE_TIMEOUT_MS);
        if (!drained || result.socket.destroyed) {
          debug("export %s: a closing connection's requests did not end in time; refusing the new one", name);
          this.#handshaking.delete(socket);
          result.export.close();
          result.socket.destroy();
          return;
        }
        result.socket.resume();
      }
      this.#handshaking.delete(socket);
      const set = this.#connections.get(name) ?? new Set<Connection>();
      this.#connections.set(name, set);
      this.#count++;
      // A STARTTLS upgrade would have replaced the socket; without one it is the socket that reads into the buffer.
      const own = input && result.socket === input.socket ? input : null;
      const conn: Connection = new Connection(
        result.socket,
        result,
        this.#budget,
        this.#replies,
        () => this.#forget(name, conn),
        own,
      );
      set.add(conn);
      debug("connection %d on export %s", this.#count, name);
    });
  }

  /** Whether every connection in `conns` closed (its requests ended) within `timeoutMs`. */
  #drained(conns: Connection[], timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      let left = conns.length;
      const wake = (): void => {
        if (--left > 0) return;
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        // Given up: the waiter goes, so retries against a connection that never ends do not pile up.
        for (const c of conns) {
          const list = (this.#forgotten.get(c) ?? []).filter((w) => w !== wake);
          if (list.length > 0) this.#forgotten.set(c, list);
          else this.#forgotten.delete(c);
        }
        resolve(false);
      }, timeoutMs);
      for (const c of conns) this.#forgotten.set(c, [...(this.#forgotten.get(c) ?? []), wake]);
    });
  }

  #forget(name: string, conn: Connection): void {
    for (const wake of this.#forgotten.get(conn) ?? []) wake();
    this.#forgotten.delete(conn);
    const set = this.#connections.get(name);
    set?.delete(conn);
    if (set && set.size === 0) {
      this.#connections.delete(name);
      for (const wake of this.#closeWaiters.get(name) ?? []) wake();
      this.#closeWaiters.delete(name);
    }
  }

  /** Connections open on an export now. */
  connectionCount(name: string): number {
    return this.#connections.get(name)?.size ?? 0;
  }

  /** Cuts every connection of an export and resolves once their requests finished and the handles closed. */
  disconnectExport(name: string): Promise<void> {
    const set = this.#connections.get(name);
    if (!set || set.size === 0) return Promise.resolve();
    const gone = new Promise<void>((resolve) => {
      const list = this.#closeWaiters.get(name) ?? [];
      list.push(resolve);
      this.#closeWaiters.set(name, list);
    });
    for (const conn of set) conn.destroy();
    return gone;
  }

  /** Stops listening and cuts every connection. */
  async close(): Promise<void> {
    const closing = this.#servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const socket of this.#handshaking) socket.destroy();
    const names = [...this.#connections.keys()];
    await Promise.all([...names.map((n) => this.disconnectExport(n)), ...closing]);
    if (this.#unixSocket) fs.rmSync(this.#unixSocket, { force: true });
  }
}
