import { KeelsonError } from "@keelson/sdk";
import { afterEach, describe, expect, it } from "vitest";
import { type ActivityExtents, ActivityLog } from "./activity-log.js";

const EXTENT = 4096;
const IDLE_MS = 100;

/** A store that records every save and can be told to fail or to hold a save until released. */
function store() {
  const saves: ActivityExtents[] = [];
  const calls = { started: 0 };
  let failNext: Error | null = null;
  let hold: Promise<void> | null = null;
  return {
    saves,
    calls,
    failNext(e: Error) {
      failNext = e;
    },
    holdSaves(): () => void {
      let release = (): void => undefined;
      hold = new Promise((r) => {
        release = r;
      });
      return () => {
        hold = null;
        release();
      };
    },
    save: async (extents: ActivityExtents): Promise<void> => {
      calls.started++;
      if (hold) await hold;
      if (failNext) {
        const e = failNext;
        failNext = null;
        throw e;
      }
      saves.push(extents);
    },
  };
}

const logs: ActivityLog[] = [];
afterEach(() => {
  for (const l of logs.splice(0)) l.close();
});

async function started(s: ReturnType<typeof store>, pinned: ActivityExtents | null = null): Promise<ActivityLog> {
  const log = new ActivityLog(s.save, EXTENT, IDLE_MS);
  logs.push(log);
  await log.start(pinned);
  return log;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `ok` holds (the sweeper runs on timers; a loaded machine may be slow). */
async function until(ok: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const last = (s: ReturnType<typeof store>) => JSON.stringify(s.saves.at(-1));

describe("activity log", () => {
  it("a write to an extent not in the log waits for a save that holds it; later writes there do not wait", async () => {
    const s = store();
    const log = await started(s);
    expect(s.saves).toEqual([[]]);
    const first = log.enter(EXTENT * 2 + 10, EXTENT); // touches extents 2 and 3
    expect(first).toBeInstanceOf(Promise);
    const leave = await first;
    expect(s.saves.at(-1)).toEqual([2, 3]);
    const again = log.enter(EXTENT * 3, 100);
    expect(typeof again).toBe("function");
    (again as () => void)();
    leave();
  });

  it("writes that miss while a save is in flight share the next save", async () => {
    const s = store();
    const log = await started(s);
    const release = s.holdSaves();
    const a = log.enter(0, 1);
    const b = log.enter(EXTENT, 1);
    const c = log.enter(EXTENT * 5, 1);
    release();
    for (const leave of await Promise.all([a, b, c])) leave();
    expect(s.saves).toEqual([[], [0, 1, 5]]);
  });

  it("an extent leaves the log once idle, never while a write to it is in flight", async () => {
    const s = store();
    const log = await started(s);
    const busy = await log.enter(0, 1);
    (await log.enter(EXTENT, 1))();
    await until(() => last(s) === "[0]", "extent 1 to leave");
    await sleep(IDLE_MS * 3);
    expect(s.saves.at(-1)).toEqual([0]);
    busy();
    await until(() => last(s) === "[]", "extent 0 to leave");
    // Back in the log before the next write to it goes out.
    const leave = log.enter(EXTENT, 1);
    expect(leave).toBeInstanceOf(Promise);
    (await leave)();
    expect(s.saves.at(-1)).toEqual([1]);
  });

  it("an extent written again while the save that drops it is in flight is saved back before that write proceeds", async () => {
    const s = store();
    const log = await started(s);
    (await log.enter(0, 1))();
    const release = s.holdSaves();
    const before = s.calls.started;
    await until(() => s.calls.started > before, "the sweep to start a save without extent 0"); // held
    const leave = log.enter(0, 1);
    expect(leave).toBeInstanceOf(Promise);
    release();
    (await leave)();
    expect(s.saves.at(-1)).toEqual([0]);
  });

  it("a failed save fails the writes that waited on it; the next write saves again", async () => {
    const s = store();
    const log = await started(s);
    s.failNext(new KeelsonError({ code: "UNAVAILABLE", message: "etcd away" }));
    await expect(log.enter(0, 1)).rejects.toMatchObject({ code: "UNAVAILABLE" });
    (await log.enter(0, 1))();
    expect(s.saves.at(-1)).toEqual([0]);
  });

  it("pinned extents stay in every save until unpinned; 'all' is saved as such and writes do not wait", async () => {
    const s = store();
    const log = await started(s, [7, 9]);
    (await log.enter(0, 1))();
    expect(s.saves.at(-1)).toEqual([0, 7, 9]);
    await until(() => last(s) === "[7,9]", "extent 0 to leave");
    log.unpin();
    await until(() => last(s) === "[]", "the pinned extents to leave");

    const s2 = store();
    const all = await started(s2, "all");
    expect(s2.saves).toEqual(["all"]);
    const leave = all.enter(EXTENT * 100, 1);
    expect(typeof leave).toBe("function");
    (leave as () => void)();
    all.unpin();
    await until(() => last(s2) === "[100]", "a save after unpinning 'all'");
  });
});
