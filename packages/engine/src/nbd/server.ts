import fs from "node:fs";
import net from "node:net";
import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { Connection } from "./connection.js";
import type { ExportCatalog } from "./export.js";
import { negotiate } from "./handshake.js";

const debug = createDebug("keelson:nbd");

/** A client must pick an export within this time or it is disconnected. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Connections one server accepts at once; more are refused at accept. */
export const MAX_CONNECTIONS = 1024;

/** Where an NBD server listens. */
export interface NbdListenOptions {
  /** `host:port` (port 0 picks a free one); omitted for no TCP listener. */
  tcp?: string;
  /** Path of a unix socket; omitted for none. */
  unixSocket?: string;
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

/** Serves an export catalog over NBD on TCP and/or a unix socket. */
export class NbdServer {
  readonly #catalog: ExportCatalog;
  readonly #servers: net.Server[] = [];
  /** Live connections in the transmission phase, by export name. */
  readonly #connections = new Map<string, Set<Connection>>();
  /** Sockets not yet past the handshake. */
  readonly #handshaking = new Set<net.Socket>();
  /** Waiters for the connections of an export to be gone. */
  readonly #closeWaiters = new Map<string, Array<() => void>>();
  #tcpAddress = "";
  #unixSocket = "";
  #count = 0;

  constructor(catalog: ExportCatalog) {
    this.#catalog = catalog;
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
      const server = this.#newServer();
      await listen(server, parseHostPort(options.tcp));
      const addr = server.address() as net.AddressInfo;
      this.#tcpAddress = addr.family === "IPv6" ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`;
    }
    if (options.unixSocket) {
      fs.rmSync(options.unixSocket, { force: true });
      await listen(this.#newServer(), options.unixSocket);
      this.#unixSocket = options.unixSocket;
    }
  }

  #newServer(): net.Server {
    const server = net.createServer((socket) => this.#accept(socket));
    server.maxConnections = MAX_CONNECTIONS;
    this.#servers.push(server);
    return server;
  }

  #accept(socket: net.Socket): void {
    this.#handshaking.add(socket);
    socket.on("error", (e) => debug("socket error during handshake: %s", e.message));
    const timer = setTimeout(() => socket.destroy(), HANDSHAKE_TIMEOUT_MS);
    negotiate(socket, this.#catalog).then((result) => {
      clearTimeout(timer);
      this.#handshaking.delete(socket);
      if (!result) {
        socket.end();
        socket.destroySoon();
        return;
      }
      const name = result.export.name;
      const set = this.#connections.get(name) ?? new Set<Connection>();
      this.#connections.set(name, set);
      this.#count++;
      const conn: Connection = new Connection(socket, result, () => this.#forget(name, conn));
      set.add(conn);
      debug("connection %d on export %s", this.#count, name);
    });
  }

  #forget(name: string, conn: Connection): void {
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
