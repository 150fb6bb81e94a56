// A stack of undo steps: whatever a run makes on the host (processes, mounts,
// loop devices) is pushed here as it is made and undone in reverse order.

/** Most undo steps one stack holds; a run that makes more has a leak. */
export const MAX_CLEANUP_STEPS = 10_000;

interface Step {
  what: string;
  undo: () => Promise<void>;
}

/** Undo steps, run last-in first-out; a failing step does not stop the others. */
export class CleanupStack {
  readonly #steps: Step[] = [];

  /** Registers an undo step; returns a function that runs it now (and removes it). */
  push(what: string, undo: () => Promise<void>): () => Promise<void> {
    if (this.#steps.length >= MAX_CLEANUP_STEPS) throw new Error(`cleanup stack full (${MAX_CLEANUP_STEPS} steps): ${what}`);
    const step: Step = { what, undo };
    this.#steps.push(step);
    return async () => {
      const i = this.#steps.indexOf(step);
      if (i < 0) return;
      this.#steps.splice(i, 1);
      await step.undo();
    };
  }

  get size(): number {
    return this.#steps.length;
  }

  /** Runs every step, newest first; resolves with what failed ("what: error"), never rejects. */
  async run(): Promise<string[]> {
    const failed: string[] = [];
    while (this.#steps.length > 0) {
      const step = this.#steps.pop() as Step;
      try {
        await step.undo();
      } catch (error) {
        failed.push(`${step.what}: ${(error as Error).message}`);
      }
    }
    return failed;
  }
}
