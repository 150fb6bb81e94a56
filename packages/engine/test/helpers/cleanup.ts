/** Cleanup steps run in reverse order, each even when an earlier one fails (tests: `await using`). */
export class Cleanup implements AsyncDisposable {
  readonly #steps: Array<{ what: string; run: () => Promise<unknown> | unknown }> = [];

  /** Registers a step. */
  add(what: string, run: () => Promise<unknown> | unknown): void {
    this.#steps.push({ what, run });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const errors: string[] = [];
    for (const step of this.#steps.reverse()) {
      try {
        await step.run();
      } catch (error) {
        errors.push(`${step.what}: ${(error as Error).message}`);
      }
    }
    if (errors.length > 0) console.warn(`cleanup problems:\n${errors.join("\n")}`);
  }
}
